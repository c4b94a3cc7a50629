// Writes dist/index.mjs: an ES module facade over the CommonJS build, so
// `import { Log } from 'seglog'` and `require('seglog')` share one instance.
const fs = require('node:fs')
const path = require('node:path')
const dist = path.join(__dirname, '..', 'dist')
const names = Object.keys(require(path.join(dist, 'index.js'))).filter((n) => n !== '__esModule')
const body = `import cjs from './index.js'\nexport const { ${names.join(', ')} } = cjs\nexport default cjs\n`
fs.writeFileSync(path.join(dist, 'index.mjs'), body)
