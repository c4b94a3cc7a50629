// Guards against the ESM facade and the CommonJS build drifting apart: `import` and
// `require` (by path and by package name) must give the very same Log class and codecs,
// so instances and `instanceof` work across both.
import { createRequire } from 'node:module'

import test from 'ava'

import * as esm from '../dist/index.mjs'
import defaultExport from '../dist/index.mjs'
import { tempDir } from './helpers/temp.mjs'

const require = createRequire(import.meta.url)

test('require(dist/index.js) and import(dist/index.mjs) give the same Log class and codecs', async (t) => {
  const cjs = require('../dist/index.js')
  t.is(typeof esm.Log, 'function')
  t.is(cjs.Log, esm.Log)
  t.is(cjs.codecs, esm.codecs)
  t.is(defaultExport.Log, esm.Log)
  t.is(typeof esm.Log.open, 'function')

  const log = await cjs.Log.open(tempDir(t), { codec: esm.codecs.utf8 })
  t.true(log instanceof esm.Log)
  t.is(log.append('shared'), 0)
  t.is(log.get(0).value, 'shared')
  await log.close()
})

test('the package name resolves through package.json exports to the same instance', async (t) => {
  const byName = await import('seglog')
  t.is(byName.Log, esm.Log)
  t.is(require('seglog').Log, esm.Log)
  t.is(require('seglog').codecs, esm.codecs)
})
