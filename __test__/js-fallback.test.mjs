// Guards the automatic fallback to the pure-TypeScript engine: a copy of dist/ without
// the native addon next to it still loads, opens logs with engine 'js', warns once per
// process (code SEGLOG_JS_FALLBACK), refuses an explicit engine: 'native', and writes a
// log the native engine then reads correctly.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { Log } from '../dist/index.mjs'
import { fixture, tempDir } from './helpers/temp.mjs'

const DIST = fileURLToPath(new URL('../dist', import.meta.url))

test('without the native addon, Log.open falls back to the JS engine with one warning', async (t) => {
  const root = tempDir(t)
  // <root>/dist/native.js requires ../native/binding.js, which does not exist here.
  fs.cpSync(DIST, path.join(root, 'dist'), { recursive: true })
  t.false(fs.existsSync(path.join(root, 'native')))
  const logDir = path.join(root, 'log')
  const out = execFileSync(process.execPath, [fixture('js-fallback-writer.mjs'), path.join(root, 'dist'), logDir, '100'], { encoding: 'utf8' })
  const seen = JSON.parse(out.trim().split('\n').at(-1))
  t.deepEqual(seen.engines, ['js', 'js'])
  t.is(seen.warnings.length, 1, JSON.stringify(seen.warnings))
  t.is(seen.warnings[0].code, 'SEGLOG_JS_FALLBACK')
  t.regex(seen.warnings[0].message, /native addon cannot be loaded/)
  t.is(seen.explicit, 'ERR_SEGLOG_UNSUPPORTED')

  // The native engine reads what the fallback wrote.
  const log = await Log.open(logDir, { segmentBytes: 8192 })
  t.is(log.engine, 'native')
  t.deepEqual(log.recovery, { indexesRebuilt: [], tempFilesRemoved: [] })
  const records = [...log.records()].map((r) => [r.offset, r.timestamp, Buffer.from(r.value).toString()])
  const expected = []
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < 50; i++) expected.push([expected.length, 1000 + i, `r${round}-${i}`])
    expected.push([expected.length, 7, 'b1'], [expected.length + 1, 7, 'b2'])
  }
  t.deepEqual(records, expected)
  t.true((await log.verify()).ok)
  await log.close()
})
