// Guards against logs that cannot cross a thread boundary cleanly: a log opened, written
// and closed in a worker thread must be readable from the main thread, and a worker's
// logs (which live in the worker's own handle registry) must not touch the main thread's.
import { Worker } from 'node:worker_threads'

import test from 'ava'

import { Log, codecs } from '../dist/index.mjs'
import { fixture, openLog, tempDir } from './helpers/temp.mjs'

function runWorker(workerData) {
  const worker = new Worker(fixture('worker.mjs'), { workerData })
  return new Promise((resolve, reject) => {
    let message
    worker.once('message', (m) => {
      message = m
    })
    worker.once('error', reject)
    worker.once('exit', (code) => (code === 0 ? resolve(message) : reject(new Error(`worker exited with code ${code}`))))
  })
}

const expectedText = (i) => `worker record ${i} `.repeat(1 + (i % 40))

test('a log written and closed in a worker thread reads back in the main thread', async (t) => {
  const dir = tempDir(t)
  // A log of the main thread stays open (and gets handle numbers of its own) meanwhile.
  const mine = await openLog(t, tempDir(t), { codec: codecs.utf8, segmentBytes: 64 << 10 })
  mine.append('main 0')

  const count = 3000
  const summary = await runWorker({ dir, mode: 'write', count })
  t.true(summary.verifyOk)
  t.is(summary.records, count)
  t.is(summary.nextOffset, count)
  t.true(summary.segments > 1, 'the worker rolled segments')
  // appendBatch/append returned each call's first offset, dense from 0.
  let next = 0
  for (let k = 0; k < summary.firsts.length; k++) {
    t.is(summary.firsts[k], next)
    next += next % 3 === 0 ? Math.min(5, count - next) : 1
  }

  const log = await openLog(t, dir, { codec: codecs.json, segmentBytes: 64 << 10 })
  t.is(log.recovery.truncation, undefined, 'the worker closed the log cleanly')
  t.deepEqual(log.recovery.indexesRebuilt, [])
  t.is(log.nextOffset, count)
  let i = 0
  for (const r of log.records()) {
    if (r.offset !== i || r.value.i !== i || r.value.text !== expectedText(i)) {
      t.fail(`record ${i}: ${JSON.stringify(r).slice(0, 200)}`)
      break
    }
    i++
  }
  t.is(i, count)
  t.is(log.get(7).timestamp, 1_000_000 + 6, 'batch timestamp (the batch starting at 6)')
  t.true((await log.verify()).ok)

  t.is(mine.append('main 1'), 1, 'the main thread log is unaffected')
  t.deepEqual([...mine.records()].map((r) => r.value), ['main 0', 'main 1'])
})

test('a log the main thread created and closed can be opened and written by a worker', async (t) => {
  const dir = tempDir(t)
  const first = await Log.open(dir, { codec: codecs.json, segmentBytes: 64 << 10 })
  // Leave it empty (the worker numbers its records from 0); closing releases the lock.
  await first.close()
  const summary = await runWorker({ dir, mode: 'write', count: 10 })
  t.is(summary.nextOffset, 10)
  const log = await openLog(t, dir, { codec: codecs.json })
  t.deepEqual(log.get(9).value, { i: 9, text: expectedText(9) })
})
