// Guards against a live tail that loses, reorders or tears records, that holds more
// than a batch for a slow consumer, or that cannot be stopped: `log.tail()` must yield
// every record in order (a reader process following a writer process for a million
// records, across rolls and batches), wake at once on the writer's own Log, end cleanly
// on abort, break and close leaving nothing behind (the process exits by itself), and
// reject bad options.
import { getEventListeners } from 'node:events'
import fs from 'node:fs'
import path from 'node:path'
import { setImmediate as immediate, setTimeout as sleep } from 'node:timers/promises'

import test from 'ava'

import { Log, codecs } from '../dist/index.mjs'
import { spawnJsonChild } from './fixtures/reader-messages.mjs'
import { openLog, tempDir } from './helpers/temp.mjs'

/** Resolves with the child's exit, or rejects if it has not exited by itself within `ms`. */
function exitsWithin(child, ms, what) {
  let timer
  return Promise.race([
    child.exited,
    new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: the process did not exit by itself within ${ms} ms (a timer, listener or handle was left behind)`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

/**
 * 'record' if `promise` (a tail's next()) settles within a chain of 100 microtasks: no
 * timer, poll or I/O callback can run in between, so a tail that needs one loses.
 */
async function withoutTimers(promise) {
  let chain = Promise.resolve()
  for (let i = 0; i < 100; i++) chain = chain.then(() => {})
  return Promise.race([promise.then(() => 'record'), chain.then(() => 'only after leaving the microtask queue')])
}

test('a reader process tails a writer process for 1,000,000 records: all of them, in order, byte for byte, across rolls and batches', async (t) => {
  const dir = tempDir(t)
  const count = 1_000_000
  const seed = 3
  // The reader opens the directory before the writer has created anything.
  const reader = spawnJsonChild(t, 'tail-reader.mjs', [dir, String(count), String(seed)])
  await reader.inbox.expect('ready')
  const started = performance.now()
  const writer = spawnJsonChild(t, 'tail-writer.mjs', [dir, String(count), String(seed), String(4 << 20), '2000'])
  await writer.inbox.expect('ready')
  const written = await writer.inbox.expect('done', 120_000)
  t.is(written.nextOffset, count)
  t.true(written.segments >= 25, `the writer rolled: ${written.segments} segments`)
  const done = await reader.inbox.expect('done', 120_000)
  t.is(done.mismatch, null)
  t.is(done.received, count)
  t.is((await exitsWithin(reader, 20_000, 'the reader')).code, 0, reader.stderrText)
  t.is((await writer.exited).code, 0, writer.stderrText)
  t.log(
    `${count} records: writer done in ${written.segments} segments; reader done ${((performance.now() - started) / 1000).toFixed(1)} s after the writer started ` +
      `(tail loop ${(done.elapsedMs / 1000).toFixed(1)} s, ${done.stalls} waits of over 1 ms)`,
  )
})

test('a tail on the writer\'s own Log wakes right after append and appendBatch, with no timer in between', async (t) => {
  const log = await openLog(t, tempDir(t), { codec: codecs.utf8, durability: 'none' })
  log.append('old')
  const controller = new AbortController()
  const tail = log.tail({ signal: controller.signal })
  const first = tail.next()
  await immediate() // the tail is now waiting: nothing new yet
  log.append('a')
  t.is(await withoutTimers(first), 'record')
  t.like((await first).value, { offset: 1, value: 'a' }, 'only records from nextOffset at the start')

  const second = tail.next()
  await immediate()
  log.appendBatch(['b', 'c'])
  t.is(await withoutTimers(second), 'record')
  t.like((await second).value, { offset: 2, value: 'b' })
  t.like((await tail.next()).value, { offset: 3, value: 'c' })

  // Appends made while the consumer is busy are yielded in order afterwards.
  for (let i = 0; i < 100; i++) log.append(`x${i}`)
  for (let i = 0; i < 100; i++) t.like((await tail.next()).value, { offset: 4 + i, value: `x${i}` })
  const pending = tail.next()
  await immediate()
  controller.abort()
  t.deepEqual(await pending, { done: true, value: undefined }, 'abort ends the waiting tail')
})

test('a tail from an old offset yields the existing records, then the new ones', async (t) => {
  const log = await openLog(t, tempDir(t), { codec: codecs.utf8, segmentBytes: 4096 })
  for (let i = 0; i < 200; i++) log.append(`r${i}`.padEnd(100, '.'))
  t.true(log.segments().length > 3)
  const seen = []
  const done = (async () => {
    for await (const r of log.tail({ from: 50, maxRecords: 7 })) {
      seen.push(r)
      if (r.offset === 249) break
    }
  })()
  await sleep(10)
  t.is(seen.length, 150, 'the existing records 50..199 came first')
  for (let i = 200; i < 250; i++) {
    if (i % 10 === 0) log.appendBatch([`r${i}`, `r${i + 1}`, `r${i + 2}`].map((s) => s.padEnd(100, '.')))
    else if (i % 10 === 1 || i % 10 === 2) continue
    else log.append(`r${i}`.padEnd(100, '.'))
    if (i % 7 === 0) await immediate()
  }
  await done
  t.deepEqual(seen.map((r) => r.offset), Array.from({ length: 200 }, (_, i) => 50 + i))
  t.deepEqual(seen.map((r) => r.value), Array.from({ length: 200 }, (_, i) => `r${50 + i}`.padEnd(100, '.')))
})

test('a tail on a readOnly log in this thread follows the writer Log of this thread', async (t) => {
  const dir = tempDir(t)
  const writer = await openLog(t, dir, { codec: codecs.json, segmentBytes: 4096 })
  writer.append({ i: 0 })
  const reader = await openLog(t, dir, { codec: codecs.json, readOnly: true })
  const seen = []
  const done = (async () => {
    for await (const r of reader.tail({ from: 0 })) {
      seen.push(r.value.i)
      if (seen.length === 300) break
    }
  })()
  for (let i = 1; i < 300; i++) {
    if (i % 3 === 0) {
      writer.appendBatch([{ i }, { i: i + 1 }])
      i++
    } else writer.append({ i })
    if (i % 25 === 0) await sleep(2)
  }
  await done
  t.deepEqual(seen, Array.from({ length: 300 }, (_, i) => i))
  t.true(writer.segments().length > 2)
})

for (const which of ['writer', 'reader']) {
  for (const how of ['abort', 'close', 'break']) {
    test(`${how} on a ${which === 'writer' ? 'writer\'s' : 'readOnly'} tail ends the loop without throwing, and the process then exits by itself`, async (t) => {
      const dir = tempDir(t)
      let writer
      if (which === 'reader') {
        // A live writer in this process; the child reads it.
        writer = await openLog(t, dir, { segmentBytes: 64 << 10 })
        for (let i = 0; i < 3; i++) writer.append(Buffer.from(`record ${i}`))
      }
      const child = spawnJsonChild(t, 'tail-abort.mjs', [dir, which, how])
      const ended = await child.inbox.expect('ended', 30_000)
      t.is(ended.threw, null, 'the loop ended without an error')
      t.is(ended.records, 3)
      if (how !== 'break') {
        t.true(ended.endedAfterMs < 1000, `the loop ended ${ended.endedAfterMs.toFixed(1)} ms after the ${how}`)
        t.log(`loop ended ${ended.endedAfterMs.toFixed(2)} ms after the ${how}`)
      }
      const { code, signal } = await exitsWithin(child, 15_000, `${how} on a ${which} tail`)
      t.is(code, 0, child.stderrText)
      t.is(signal, null)
      if (writer !== undefined) t.is(writer.append(Buffer.from('after')), 3, 'the writer is unaffected')
    })
  }
}

test('abort ends a waiting tail and removes its abort listener; waking on records leaves no listener behind either', async (t) => {
  for (const readOnly of [false, true]) {
    const dir = tempDir(t)
    const writer = await openLog(t, dir, { codec: codecs.utf8, durability: 'none' })
    const log = readOnly ? await openLog(t, dir, { codec: codecs.utf8, readOnly: true }) : writer
    const controller = new AbortController()
    const listeners = () => getEventListeners(controller.signal, 'abort').length
    const seen = []
    let ended = false
    const loop = (async () => {
      for await (const r of log.tail({ signal: controller.signal })) seen.push(r.value)
      ended = true
    })()
    // Many waits, each ended by a record.
    for (let i = 0; i < 200; i++) {
      writer.append(`v${i}`)
      while (seen.length < i + 1) await sleep(readOnly ? 1 : 0)
      t.true(listeners() <= 1, `at most one abort listener while tailing (${listeners()} after ${i + 1} records)`)
    }
    await sleep(10)
    t.is(listeners(), 1, 'the waiting tail listens for abort')
    controller.abort()
    await loop
    t.true(ended)
    t.is(listeners(), 0, 'and stops listening once it ends')
    t.deepEqual(seen, Array.from({ length: 200 }, (_, i) => `v${i}`))
  }
})

test('an already-aborted signal yields nothing; close() ends waiting tails of this Log; a closed log refuses to tail', async (t) => {
  const dir = tempDir(t)
  const log = await Log.open(dir, { codec: codecs.utf8 })
  log.append('a')
  const seen = []
  for await (const r of log.tail({ from: 0, signal: AbortSignal.abort() })) seen.push(r)
  t.deepEqual(seen, [], 'a tail whose signal is already aborted ends at once')

  const reader = await Log.open(dir, { codec: codecs.utf8, readOnly: true })
  const results = await Promise.all([
    (async () => {
      const out = []
      for await (const r of log.tail({ from: 0 })) out.push(r.value)
      return out
    })(),
    (async () => {
      const out = []
      for await (const r of log.tail()) out.push(r.value)
      return out
    })(),
    (async () => {
      const out = []
      for await (const r of reader.tail({ from: 0 })) out.push(r.value)
      return out
    })(),
    (async () => {
      await sleep(20)
      await log.close()
      await reader.close()
    })(),
  ])
  t.deepEqual(results.slice(0, 3), [['a'], [], ['a']], 'each tail ended when its log closed')
  t.throws(() => log.tail(), { code: 'ERR_SEGLOG_CLOSED' })
  t.throws(() => reader.tail(), { code: 'ERR_SEGLOG_CLOSED' })
})

test('a slow consumer of a tail holds at most about one batch: memory stays flat while the writer runs 200,000 records ahead', async (t) => {
  const count = 200_000
  const run = async (mode, pauseMs) => {
    const dir = tempDir(t)
    const consumer = spawnJsonChild(t, 'tail-slow.mjs', [dir, String(count), mode, String(pauseMs)], { nodeArgs: ['--expose-gc'] })
    await consumer.inbox.expect('ready')
    const writer = spawnJsonChild(t, 'tail-writer.mjs', [dir, String(count), '5', String(4 << 20), '0'])
    await writer.inbox.expect('ready')
    const written = await writer.inbox.expect('done')
    t.is(written.nextOffset, count)
    const done = await consumer.inbox.expect('done', 120_000)
    t.is(done.mismatch, null)
    t.is(done.received, count)
    t.is(done.samples, count / 10_000)
    t.is((await consumer.exited).code, 0, consumer.stderrText)
    return done
  }
  const MiB = 1 << 20
  const slow = await run('slow', 3)
  // The control: a consumer that keeps every record shows what holding them costs, so
  // the bound below is one a buffering tail would break.
  const hoard = await run('hoard', 0)
  const fmt = (d) => `heap +${(d.heapGrowthMax / MiB).toFixed(1)} MiB, array buffers +${(d.arrayBuffersGrowthMax / MiB).toFixed(1)} MiB (${(d.elapsedMs / 1000).toFixed(1)} s)`
  t.log(`slow consumer: ${fmt(slow)}`)
  t.log(`hoarding consumer (control): ${fmt(hoard)}`)
  const LIMIT = 8 * MiB
  t.true(hoard.heapGrowthMax + hoard.arrayBuffersGrowthMax > 2 * LIMIT, 'the control holds far more than the limit')
  t.true(slow.heapGrowthMax + slow.arrayBuffersGrowthMax < LIMIT, `the slow consumer stays under ${LIMIT / MiB} MiB: ${fmt(slow)}`)
})

test('cross-process tail latency, append to yield (reported; only a generous sanity bound is checked)', async (t) => {
  const dir = tempDir(t)
  const count = 200
  const writer = spawnJsonChild(t, 'tail-pinger.mjs', [dir, String(count)])
  await writer.inbox.expect('ready')
  const reader = spawnJsonChild(t, 'tail-latency-reader.mjs', [dir, String(count)])
  await reader.inbox.expect('ready')
  writer.stdin.write('go\n')
  const done = await reader.inbox.expect('done')
  await writer.inbox.expect('done')
  t.deepEqual(done.offsets, Array.from({ length: count }, (_, i) => i))
  const sorted = [...done.latenciesUs].sort((a, b) => a - b)
  const pct = (p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
  t.log(`append -> yield across processes over ${count} records: median ${(pct(50) / 1000).toFixed(2)} ms, p99 ${(pct(99) / 1000).toFixed(2)} ms, max ${(sorted[sorted.length - 1] / 1000).toFixed(2)} ms`)
  t.true(sorted[0] >= 0, 'no record is yielded before it was appended')
  t.true(pct(50) < 100_000, `median ${pct(50)} us is under 100 ms`)
  t.is((await reader.exited).code, 0, reader.stderrText)
  t.is((await writer.exited).code, 0, writer.stderrText)
})

test('bad tail options', async (t) => {
  const dir = tempDir(t)
  const log = await openLog(t, dir, { segmentBytes: 4096 })
  for (let i = 0; i < 100; i++) log.append(Buffer.alloc(100, i))
  t.true(log.segments().length > 2)
  // tail() checks its options when called (a sync throw), so go through an async function.
  const first = async (options) => log.tail(options).next()
  await t.throwsAsync(() => first(null), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  await t.throwsAsync(() => first('from 3'), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  await t.throwsAsync(() => first({ signal: {} }), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  await t.throwsAsync(() => first({ signal: new EventTarget() }), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  await t.throwsAsync(() => first({ maxRecords: 0 }), { instanceOf: RangeError, code: 'ERR_SEGLOG_INVALID_ARGUMENT' })
  await t.throwsAsync(() => first({ maxRecords: -1 }), { instanceOf: RangeError, code: 'ERR_SEGLOG_INVALID_ARGUMENT' })
  await t.throwsAsync(() => first({ maxRecords: 1.5 }), { instanceOf: RangeError, code: 'ERR_SEGLOG_INVALID_ARGUMENT' })
  await t.throwsAsync(() => first({ maxRecords: '10' }), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  await t.throwsAsync(() => first({ from: -1 }), { instanceOf: RangeError, code: 'ERR_SEGLOG_INVALID_ARGUMENT' })
  await t.throwsAsync(() => first({ from: 2 ** 53 }), { instanceOf: RangeError, code: 'ERR_SEGLOG_INVALID_ARGUMENT' })
  await t.throwsAsync(() => first({ from: '0' }), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  await t.throwsAsync(() => first({ from: NaN }), { instanceOf: RangeError, code: 'ERR_SEGLOG_INVALID_ARGUMENT' })
  await log.close()

  // from below firstOffset: the oldest segment is gone (as retention would leave it).
  const oldest = fs.readdirSync(dir).filter((n) => /^\d{20}\.(seg|idx)$/.test(n)).sort()
  fs.rmSync(path.join(dir, oldest[0]))
  fs.rmSync(path.join(dir, oldest[1]))
  for (const readOnly of [false, true]) {
    const trimmed = await openLog(t, dir, { readOnly })
    const firstOffset = trimmed.firstOffset
    t.true(firstOffset > 0)
    const err = await t.throwsAsync(async () => trimmed.tail({ from: firstOffset - 1 }).next(), { instanceOf: RangeError, code: 'ERR_SEGLOG_OFFSET_OUT_OF_RANGE' })
    t.true(err.message.includes(String(firstOffset)), err.message)
    const seen = []
    for await (const r of trimmed.tail({ from: firstOffset, signal: AbortSignal.timeout(50) })) seen.push(r.offset)
    t.deepEqual(seen, Array.from({ length: 100 - firstOffset }, (_, i) => firstOffset + i), 'from = firstOffset is fine')
    await trimmed.close()
  }
})

test('tail() fixes its start when called: a record appended before the first next() is yielded', async (t) => {
  const dir = tempDir(t)
  const log = await openLog(t, dir)
  log.append(Buffer.from('old'))
  const tail = log.tail()
  log.append(Buffer.from('new'))
  const first = await tail.next()
  t.is(first.value.offset, 1)
  t.is(Buffer.from(first.value.value).toString(), 'new')
  await tail.return()
})

test("after truncate, a tail on the writer's own Log yields the records appended at the reused offsets", async (t) => {
  const log = await openLog(t, tempDir(t))
  for (let i = 0; i < 10; i++) log.append(Buffer.from(`old${i}`))
  const seen = []
  const tail = log.tail({ from: 0 })
  for (let i = 0; i < 10; i++) seen.push((await tail.next()).value.offset)
  await log.truncate(2)
  for (let i = 0; i < 3; i++) log.append(Buffer.from(`new${i}`))
  const after = []
  for (let i = 0; i < 3; i++) {
    const r = (await tail.next()).value
    after.push([r.offset, Buffer.from(r.value).toString()])
  }
  t.deepEqual(after, [[2, 'new0'], [3, 'new1'], [4, 'new2']])
  await tail.return()
})
