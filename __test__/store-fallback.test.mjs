// Without the native addon (an unsupported platform), `Store.open` fails with a clear
// ERR_SEGLOG_UNSUPPORTED error instead of crashing: the store needs the Rust engine.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

import test from 'ava'

import { tempDir } from './helpers/temp.mjs'

const DIST = fileURLToPath(new URL('../dist', import.meta.url))

test('without the native addon, Store.open rejects with ERR_SEGLOG_UNSUPPORTED and writes nothing', (t) => {
  const root = tempDir(t)
  fs.cpSync(DIST, path.join(root, 'dist'), { recursive: true })
  const dir = path.join(root, 'store')
  const script = `
    const { Store } = await import(${JSON.stringify(pathToFileURL(path.join(root, 'dist', 'index.mjs')).href)})
    try {
      await Store.open(${JSON.stringify(dir)})
      console.log(JSON.stringify({ opened: true }))
    } catch (err) {
      console.log(JSON.stringify({ name: err.name, code: err.code, message: err.message }))
    }`
  const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' }).trim().split('\n').at(-1))
  t.is(out.code, 'ERR_SEGLOG_UNSUPPORTED')
  t.regex(out.message, /native engine/)
  t.false(fs.existsSync(dir))
})
