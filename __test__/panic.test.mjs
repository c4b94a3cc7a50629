// Guards against a Rust panic aborting the Node.js process: a panic inside a binding call
// must surface as a JS Error that can be caught, and the process (and the handle's close)
// must keep working afterwards.
import { createRequire } from 'node:module'

import test from 'ava'

import { Log } from '../dist/index.mjs'
import { tempDir } from './helpers/temp.mjs'

const require = createRequire(import.meta.url)
const { NativeLog } = require('../native/binding.js')

test('a panic in the native code becomes a catchable Error; the process keeps running', async (t) => {
  const dir = tempDir(t)
  const handle = NativeLog.open(dir)
  const err = t.throws(() => handle.panicForTest())
  t.true(err instanceof Error)
  t.regex(err.message, /panic/)
  // Still alive: the same handle answers and closes, and the log opens again.
  t.is(handle.nextOffset, 0)
  t.notThrows(() => handle.close())
  t.notThrows(() => handle.close(), 'close is idempotent')
  const log = await Log.open(dir)
  t.is(log.append(Buffer.from('after the panic')), 0)
  await log.close()
})

test('a panic surfaces with the stable code ERR_SEGLOG_INTERNAL, like panics on the hot path', (t) => {
  const handle = NativeLog.open(tempDir(t))
  t.teardown(() => handle.close())
  const err = t.throws(() => handle.panicForTest())
  t.is(err.code, 'ERR_SEGLOG_INTERNAL', `error.code is one of the documented codes (got ${err.code}: ${err.message})`)
})
