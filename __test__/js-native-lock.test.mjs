// The two engines exclude each other as writers (FORMAT.md 6.1): a native writer refuses
// a directory the JS engine holds (seglog.jslock naming a live process), and ignores a
// stale seglog.jslock left by a process that is gone.
import fs from 'node:fs'
import path from 'node:path'

import test from 'ava'

import { Log } from '../dist/index.mjs'
import { tempDir } from './helpers/temp.mjs'

test('a native writer gets ERR_SEGLOG_LOCKED while the JS engine holds the directory, and opens once it closes', async (t) => {
  const dir = tempDir(t)
  const js = await Log.open(dir, { engine: 'js' })
  js.append(Buffer.from('from js'))
  const err = await t.throwsAsync(() => Log.open(dir))
  t.is(err.code, 'ERR_SEGLOG_LOCKED')
  t.regex(err.message, /seglog\.jslock/)
  t.is(js.get(0).value.toString(), 'from js')
  await js.close()
  const native = await Log.open(dir)
  t.is(native.engine, 'native')
  t.is(native.get(0).value.toString(), 'from js')
  await native.close()
})

test('a stale seglog.jslock (its process is gone) does not keep the native engine out; a foreign host does', async (t) => {
  const dir = tempDir(t)
  const host = fs.readFileSync('/proc/sys/kernel/hostname', 'utf8').trim()
  // A pid above the kernel's maximum names no process.
  fs.writeFileSync(path.join(dir, 'seglog.jslock'), `4999999 ${host} 0123456789abcdef\n`)
  const log = await Log.open(dir)
  log.append(Buffer.from('x'))
  await log.close()
  fs.writeFileSync(path.join(dir, 'seglog.jslock'), `1 some-other-host 0123456789abcdef\n`)
  const err = await t.throwsAsync(() => Log.open(dir))
  t.is(err.code, 'ERR_SEGLOG_LOCKED')
})
