// Guards against two writers on one directory: a second open, in this process, a worker
// or another process, fails fast with ERR_SEGLOG_LOCKED naming the directory, a failed
// open does not release the first writer's lock, and the lock dies with its process.
import { Worker } from 'node:worker_threads'

import test from 'ava'

import { Log, codecs } from '../dist/index.mjs'
import { fixture, openLog, spawnFixture, tempDir, waitForLine } from './helpers/temp.mjs'

const SEGMENT_BYTES = 64 << 10

async function tryOpenInChild(t, dir) {
  const child = spawnFixture(t, 'try-open.mjs', [dir])
  const line = await waitForLine(child, (l) => l.startsWith('{'))
  const { code } = await child.exited
  t.is(code, 0, child.stderrText)
  return JSON.parse(line)
}

test('a second open in the same process: ERR_SEGLOG_LOCKED naming the dir; works again after the first closes', async (t) => {
  const dir = tempDir(t)
  const first = await Log.open(dir, { segmentBytes: SEGMENT_BYTES, codec: codecs.utf8 })
  first.append('one')
  const err = await t.throwsAsync(() => Log.open(dir, { segmentBytes: SEGMENT_BYTES }), { code: 'ERR_SEGLOG_LOCKED', instanceOf: Error })
  t.true(err.message.includes(dir), `message names the directory: ${err.message}`)
  // The failed open must leave the first writer's lock in place: another process still
  // cannot open the log (closing a second descriptor of the lock file must not unlock it).
  const other = await tryOpenInChild(t, dir)
  t.like(other, { ok: false, code: 'ERR_SEGLOG_LOCKED' })
  // And the first writer is unaffected.
  t.is(first.append('two'), 1)
  t.true((await first.verify()).ok)
  await first.close()

  const second = await openLog(t, dir, { segmentBytes: SEGMENT_BYTES, codec: codecs.utf8 })
  t.deepEqual([...second.records()].map((r) => r.value), ['one', 'two'])
  second.append('three')
  t.is(second.nextOffset, 3)
})

test('a log open in this process is locked for a child process, and free for it after close', async (t) => {
  const dir = tempDir(t)
  const log = await Log.open(dir, { segmentBytes: SEGMENT_BYTES })
  log.append(Buffer.from('x'))
  const locked = await tryOpenInChild(t, dir)
  t.is(locked.ok, false)
  t.is(locked.code, 'ERR_SEGLOG_LOCKED')
  t.true(locked.message.includes(dir), locked.message)
  await log.close()
  t.deepEqual(await tryOpenInChild(t, dir), { ok: true, nextOffset: 1 })
})

test('a lock held by a child process: ERR_SEGLOG_LOCKED here until the child is SIGKILLed, then the log opens with its records', async (t) => {
  const dir = tempDir(t)
  const child = spawnFixture(t, 'lock-holder.mjs', [dir, '25'])
  await waitForLine(child, (l) => l === 'ready')
  const err = await t.throwsAsync(() => Log.open(dir), { code: 'ERR_SEGLOG_LOCKED' })
  t.true(err.message.includes(dir), err.message)
  await t.throwsAsync(() => Log.open(dir), { code: 'ERR_SEGLOG_LOCKED' }, 'still locked on a retry')

  child.kill('SIGKILL')
  const { signal } = await child.exited
  t.is(signal, 'SIGKILL')

  const log = await openLog(t, dir, { codec: codecs.utf8, segmentBytes: SEGMENT_BYTES })
  t.is(log.nextOffset, 25, 'every record the killed child appended is there')
  t.deepEqual(
    [...log.records()].map((r) => r.value),
    Array.from({ length: 25 }, (_, i) => `held-${i}`),
  )
  t.true((await log.verify()).ok)
})

test('a log open in the main thread is locked for a worker thread', async (t) => {
  const dir = tempDir(t)
  const log = await openLog(t, dir, { segmentBytes: SEGMENT_BYTES })
  log.append(Buffer.from('main'))
  const worker = new Worker(fixture('worker.mjs'), { workerData: { dir, mode: 'try-open' } })
  const [message] = await Promise.all([
    new Promise((resolve, reject) => {
      worker.once('message', resolve)
      worker.once('error', reject)
    }),
    new Promise((resolve) => worker.once('exit', resolve)),
  ])
  t.like(message, { ok: false, code: 'ERR_SEGLOG_LOCKED' })
  t.is(log.append(Buffer.from('still mine')), 1)
})
