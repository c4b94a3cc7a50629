// Guards against readers that miss, tear or damage what a live writer writes: a readOnly
// log in another process, a worker thread or this thread must see records the writer
// appends after it opened (across segment rolls, byte for byte), must only ever see
// whole atomic batches, must refuse writes with ERR_SEGLOG_READ_ONLY, and must never
// write anything (no lock file, no index, no temp-file cleanup, no tail repair: that is
// the writer's recovery, DURABILITY.md rules 9 and 10).
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import test from 'ava'

import { Log } from '../dist/index.mjs'
import { spawnJsonChild, startJsonWorker } from './fixtures/reader-messages.mjs'
import { FLAG_BATCH_CONTINUES, FRAME_HEADER_LEN, align8, frameCrc, patchFile, readSegmentFrames, segmentPaths } from './helpers/format.mjs'
import { callPlan, payloadFor, timestampFor } from './helpers/payload.mjs'
import { openLog, tempDir } from './helpers/temp.mjs'

const SEED = 7

/** Appends the calls of callPlan(seed) (helpers/payload.mjs), as writer.mjs does. */
function planWriter(log, seed) {
  const plan = callPlan(seed)
  const w = {
    next: log.nextOffset,
    /** Appends one whole call; returns how many records it appended. */
    appendCall() {
      const call = plan.next().value
      const timestamp = timestampFor(w.next)
      const first = call.batch
        ? log.appendBatch(Array.from({ length: call.count }, (_, i) => payloadFor(w.next + i)), timestamp)
        : log.append(payloadFor(w.next), timestamp)
      if (first !== w.next) throw new Error(`call returned offset ${first}, expected ${w.next}`)
      w.next += call.count
      return call.count
    },
    /** Appends whole calls until `end` (a call boundary: see `planEnd`). */
    appendUntil(end) {
      while (w.next < end) w.appendCall()
      if (w.next !== end) throw new Error(`${end} is not a call boundary`)
    },
  }
  return w
}

/** The first end of a call of callPlan(seed) at or after `atLeast`. */
function planEnd(seed, atLeast) {
  let end = 0
  for (const call of callPlan(seed)) {
    if (end >= atLeast) return end
    end += call.count
  }
}

function digestOf(count) {
  const hash = crypto.createHash('sha256')
  for (let i = 0; i < count; i++) hash.update(payloadFor(i))
  return hash.digest('hex')
}

/** Checks records [from, to) of `log` against the plan's payloads; returns the first problem or null. */
function firstBadRecord(log, from, to) {
  let expected = from
  for (const r of log.records({ from, to })) {
    if (r.offset !== expected) return `record ${expected} came back as offset ${r.offset}`
    if (!Buffer.from(r.value).equals(payloadFor(r.offset))) return `record ${r.offset}: payload differs`
    expected++
  }
  return expected === to ? null : `only ${expected - from} of ${to - from} records`
}

/** Names, sizes, inodes, times (ns) and SHA-256 of every file in `dir`, and the directory's own times. */
function snapshot(dir) {
  const times = (st) => ({ ino: String(st.ino), size: String(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs) })
  const files = {}
  for (const name of fs.readdirSync(dir).sort()) {
    const file = path.join(dir, name)
    files[name] = { ...times(fs.statSync(file, { bigint: true })), sha256: crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex') }
  }
  return { dir: times(fs.statSync(dir, { bigint: true })), files }
}

function contents(dir) {
  return Object.fromEntries(Object.entries(snapshot(dir).files).map(([name, f]) => [name, f.sha256]))
}

/**
 * With a writer active in this thread, starts a reader (`startReader(params)` returns
 * its inbox), appends the rest of the plan while it polls, and checks what it saw.
 */
async function followWhileWriting(t, startReader) {
  const dir = tempDir(t)
  const writer = await openLog(t, dir, { segmentBytes: 256 << 10 })
  const w = planWriter(writer, SEED)
  w.appendUntil(planEnd(SEED, 50))
  const before = w.next
  const target = planEnd(SEED, 3000)
  const inbox = startReader({ dir, target, seed: SEED })
  const ready = await inbox.expect('ready')
  t.is(ready.nextOffset, before, 'the reader sees what was there when it opened')
  // Append the rest in small steps while the reader polls, rolling segments on the way.
  for (let calls = 0; w.next < target; calls++) {
    w.appendCall()
    if (calls % 20 === 0) await sleep(1)
  }
  const done = await inbox.expect('done')
  t.is(done.mismatch, null)
  t.is(done.checked, target, 'every record appended after the reader opened reached it')
  t.is(done.nextOffset, target)
  t.is(done.digest, digestOf(target), 'byte-identical')
  t.true(writer.segments().length >= 10, `the writer rolled (${writer.segments().length} segments)`)
  t.is(done.segments, writer.segments().length, 'the reader followed every roll')
  return done
}

test('a readOnly log in another process sees the records a writer in this process appends after it opened', async (t) => {
  let child
  await followWhileWriting(t, (params) => {
    child = spawnJsonChild(t, 'reader-follow.mjs', [JSON.stringify(params)])
    return child.inbox
  })
  const { code } = await child.exited
  t.is(code, 0, child.stderrText)
})

test('a readOnly log in a worker thread sees the records the main thread appends after it opened', async (t) => {
  let worker
  await followWhileWriting(t, (params) => {
    worker = startJsonWorker(t, 'reader-follow.mjs', params)
    return worker.inbox
  })
  t.is(await worker.exited, 0)
})

test('a readOnly log in the same thread as the writer: nextOffset, get, readBatch and records() catch up with it, across rolls', async (t) => {
  const dir = tempDir(t)
  const writer = await openLog(t, dir, { segmentBytes: 128 << 10 })
  const w = planWriter(writer, SEED)
  w.appendUntil(planEnd(SEED, 10))
  const reader = await openLog(t, dir, { readOnly: true })
  t.true(reader.readOnly)
  t.is(reader.nextOffset, w.next)

  // get past the reader's known end finds a record appended since.
  let end = planEnd(SEED, w.next + 30)
  w.appendUntil(end)
  const r = reader.get(end - 1)
  t.truthy(r, 'get(offset) past the known end catches up')
  t.deepEqual(Buffer.from(r.value), payloadFor(end - 1))
  // readBatch from the known end.
  const from = reader.nextOffset
  t.is(from, end)
  end = planEnd(SEED, end + 40)
  w.appendUntil(end)
  const batch = reader.readBatch(from, { maxRecords: 10_000, maxBytes: 64 << 20 })
  t.deepEqual(batch.map((x) => x.offset), Array.from({ length: end - from }, (_, i) => from + i), 'readBatch past the known end catches up')
  // records() with no range sees everything appended so far.
  end = planEnd(SEED, end + 100)
  w.appendUntil(end)
  t.is([...reader.records()].length, end, 'records() catches up')
  // Many rolls between two looks.
  end = planEnd(SEED, end + 2000)
  w.appendUntil(end)
  t.true(writer.segments().length >= 20, `${writer.segments().length} segments`)
  t.deepEqual(Buffer.from(reader.get(end - 1).value), payloadFor(end - 1))
  t.is(reader.nextOffset, end)
  t.deepEqual(
    reader.segments().map((s) => [s.baseOffset, s.nextOffset]),
    writer.segments().map((s) => [s.baseOffset, s.nextOffset]),
    'the reader has the writer\'s segments',
  )
  t.is(firstBadRecord(reader, 0, end), null)
  t.is(reader.get(end), undefined, 'nothing past the writer\'s end')
})

test('a reader opened on an empty directory, before any writer created a segment, sees records once they arrive', async (t) => {
  const dir = tempDir(t)
  const reader = await openLog(t, dir, { readOnly: true })
  t.is(reader.nextOffset, 0)
  t.is(reader.firstOffset, 0)
  t.deepEqual(reader.segments(), [])
  t.is(reader.get(0), undefined)
  t.deepEqual(reader.readBatch(0), [])
  t.deepEqual([...reader.records()], [])
  t.deepEqual(fs.readdirSync(dir), [], 'the reader created nothing')

  const writer = await openLog(t, dir, { segmentBytes: 128 << 10 })
  t.is(reader.nextOffset, 0, 'an empty segment is no record')
  const w = planWriter(writer, SEED)
  w.appendCall()
  t.deepEqual(Buffer.from(reader.get(0).value), payloadFor(0))
  const end = planEnd(SEED, 500)
  w.appendUntil(end)
  t.is(reader.nextOffset, end)
  t.is(reader.segments().length, writer.segments().length)
  t.is(firstBadRecord(reader, 0, end), null)
})

test('a reader process opened on an empty directory follows a writer that starts later', async (t) => {
  const dir = tempDir(t)
  const target = planEnd(SEED, 1000)
  const child = spawnJsonChild(t, 'reader-follow.mjs', [JSON.stringify({ dir, target, seed: SEED })])
  t.like(await child.inbox.expect('ready'), { nextOffset: 0, segments: 0 })
  const writer = await openLog(t, dir, { segmentBytes: 128 << 10 })
  const w = planWriter(writer, SEED)
  for (let calls = 0; w.next < target; calls++) {
    w.appendCall()
    if (calls % 10 === 0) await sleep(1)
  }
  const done = await child.inbox.expect('done')
  t.like(done, { mismatch: null, checked: target, nextOffset: target, digest: digestOf(target) })
  t.is((await child.exited).code, 0, child.stderrText)
})

async function batchesSeenWhole(t, startReader) {
  const dir = tempDir(t)
  // Batches of up to 24 records of up to 3 KiB: a batch spans many pages, and rolls
  // happen between batches.
  const writer = await openLog(t, dir, { segmentBytes: 256 << 10 })
  const total = planEnd(SEED, 20_000)
  const inbox = startReader({ dir, total, seed: SEED })
  await inbox.expect('ready')
  const w = planWriter(writer, SEED)
  for (let calls = 0; w.next < total; calls++) {
    w.appendCall()
    if (calls % 20 === 0) await sleep(1)
  }
  const done = await inbox.expect('done')
  t.deepEqual(done.torn, [], 'the reader only ever saw whole calls')
  t.is(done.badRecord, null)
  t.is(done.lastSeen, total)
  // The check means something only if the reader looked often while the writer wrote.
  t.true(done.distinct >= 20, `the reader saw ${done.distinct} different ends while the writer appended`)
  t.log(`${done.distinct} different ends seen over ${total} records in ${writer.segments().length} segments`)
}

test('a reader polling in a worker sees each appendBatch all or nothing', async (t) => {
  await batchesSeenWhole(t, (params) => startJsonWorker(t, 'reader-batches.mjs', params).inbox)
})

test('a reader polling in another process sees each appendBatch all or nothing', async (t) => {
  await batchesSeenWhole(t, (params) => spawnJsonChild(t, 'reader-batches.mjs', [JSON.stringify(params)]).inbox)
})

/**
 * A closed log of `end` records with every kind of leftover a crash can leave: a torn
 * tail behind a complete frame of an unfinished batch, *.tmp files, missing indexes and
 * no lock file. Returns the paths it made.
 */
async function crashLeftovers(t) {
  const dir = tempDir(t)
  const writer = await Log.open(dir, { segmentBytes: 128 << 10 })
  const w = planWriter(writer, SEED)
  const end = planEnd(SEED, 600)
  w.appendUntil(end)
  await writer.close()

  const segs = segmentPaths(dir)
  t.true(segs.length >= 4, `${segs.length} segments`)
  const active = segs[segs.length - 1]
  const { frames, end: dataEnd } = readSegmentFrames(active)
  t.is(frames[frames.length - 1].offset, end - 1)
  // A complete frame saying a batch continues, then a frame whose payload was not all written.
  const frame = (offset, flags, payload) => {
    const buf = Buffer.alloc(FRAME_HEADER_LEN + payload.length)
    buf.writeUInt32LE(buf.length, 4)
    buf.writeBigUInt64LE(BigInt(offset), 8)
    buf.writeBigUInt64LE(BigInt(timestampFor(end)), 16)
    buf.writeUInt32LE(flags, 24)
    payload.copy(buf, FRAME_HEADER_LEN)
    buf.writeUInt32LE(frameCrc(buf, 0, buf.length), 0)
    return buf
  }
  const open = frame(end, FLAG_BATCH_CONTINUES, payloadFor(end))
  const torn = frame(end + 1, 0, payloadFor(end + 1)).subarray(0, FRAME_HEADER_LEN + 40)
  t.true(align8(dataEnd + open.length) + torn.length + 8 < fs.statSync(active).size, 'room in the active segment')
  patchFile(active, dataEnd, open)
  patchFile(active, align8(dataEnd + open.length), torn)
  // Leftovers of an interrupted roll and index write.
  const tmpSeg = path.join(dir, `${String(end + 7).padStart(20, '0')}.seg.tmp`)
  fs.writeFileSync(tmpSeg, Buffer.alloc(8192, 0xab))
  const tmpIdx = `${segs[0].replace(/\.seg$/, '.idx')}.tmp`
  fs.writeFileSync(tmpIdx, Buffer.alloc(100, 0xcd))
  const removedIdx = segs[1].replace(/\.seg$/, '.idx')
  fs.rmSync(removedIdx)
  fs.rmSync(active.replace(/\.seg$/, '.idx'), { force: true })
  fs.rmSync(path.join(dir, 'seglog.lock'))
  return { dir, end, tmpSeg, tmpIdx, removedIdx }
}

test('a reader writes nothing: not on a log with a torn tail, an open batch, *.tmp files and missing indexes', async (t) => {
  const { dir, end, tmpSeg, tmpIdx, removedIdx } = await crashLeftovers(t)
  const copy = tempDir(t)
  fs.cpSync(dir, copy, { recursive: true })
  const before = snapshot(dir)
  // Let a coarse file-system clock tick, so a write during the session would show in mtimes.
  await sleep(20)

  const reader = await Log.open(dir, { readOnly: true })
  t.is(reader.nextOffset, end, 'the torn frame and the open batch are "not yet", not records')
  t.is(reader.recovery.truncation, undefined, 'a reader never cuts')
  t.deepEqual(reader.recovery.tempFilesRemoved, [], 'a reader never deletes')
  t.is(firstBadRecord(reader, 0, end), null)
  t.is(reader.get(end), undefined)
  t.is(reader.get(end + 1), undefined)
  t.deepEqual(reader.readBatch(end), [])
  t.is(reader.readBatch(end - 5).length, 5)
  t.log('verify() on the reader:', JSON.stringify(await reader.verify()))
  t.is(reader.segments().length, segmentPaths(dir).length)
  const tailed = []
  for await (const r of reader.tail({ from: end - 3, signal: AbortSignal.timeout(50) })) tailed.push(r.offset)
  t.deepEqual(tailed, [end - 3, end - 2, end - 1])
  t.throws(() => reader.append(payloadFor(end)), { code: 'ERR_SEGLOG_READ_ONLY' })
  t.is(reader.nextOffset, end)
  await reader.close()

  // A reader in another process reads it all too, and writes nothing either.
  const child = spawnJsonChild(t, 'reader-follow.mjs', [JSON.stringify({ dir, target: end, seed: SEED })])
  t.is((await child.inbox.expect('ready')).nextOffset, end)
  t.like(await child.inbox.expect('done'), { mismatch: null, checked: end, nextOffset: end })
  t.is((await child.exited).code, 0, child.stderrText)

  t.deepEqual(snapshot(dir), before, 'names, bytes, inodes, mtimes and ctimes are unchanged')
  t.deepEqual(contents(dir), contents(copy))
  t.false(fs.existsSync(path.join(dir, 'seglog.lock')), 'a reader takes no lock (creates no lock file)')

  // The repairs are left to the writer, and it finds exactly what a writer finds on the
  // untouched copy.
  const repaired = await openLog(t, dir)
  const reference = await openLog(t, copy)
  const normalize = (report) => JSON.parse(JSON.stringify(report).replaceAll(copy, dir))
  t.deepEqual(repaired.recovery, normalize(reference.recovery))
  t.is(repaired.recovery.truncation?.firstDroppedOffset, end)
  t.deepEqual([...repaired.recovery.tempFilesRemoved].sort(), [tmpIdx, tmpSeg].sort())
  t.true(repaired.recovery.indexesRebuilt.includes(removedIdx), JSON.stringify(repaired.recovery.indexesRebuilt))
  t.is(repaired.nextOffset, end)
})

test('writes on a reader fail with ERR_SEGLOG_READ_ONLY and change nothing', async (t) => {
  const dir = tempDir(t)
  const writer = await Log.open(dir, { segmentBytes: 128 << 10 })
  const w = planWriter(writer, SEED)
  const end = planEnd(SEED, 100)
  w.appendUntil(end)

  const attempts = async (reader) => {
    const x = payloadFor(0)
    t.throws(() => reader.append(x), { code: 'ERR_SEGLOG_READ_ONLY' })
    t.throws(() => reader.append(x, 5), { code: 'ERR_SEGLOG_READ_ONLY' })
    t.throws(() => reader.appendBatch([x, x]), { code: 'ERR_SEGLOG_READ_ONLY' })
    await t.throwsAsync(() => reader.appendDurable(x), { code: 'ERR_SEGLOG_READ_ONLY' })
    await t.throwsAsync(() => reader.appendBatchDurable([x]), { code: 'ERR_SEGLOG_READ_ONLY' })
    await t.throwsAsync(() => reader.sync(), { code: 'ERR_SEGLOG_READ_ONLY' })
    t.is(reader.nextOffset, end)
    t.is(reader.durableOffset, 0)
    t.is(reader.durability, undefined)
  }

  // While the writer is open in this thread.
  const live = await openLog(t, dir, { readOnly: true })
  await attempts(live)
  t.is(writer.nextOffset, end, 'the writer saw nothing of it')
  t.is(writer.append(payloadFor(end)), end, 'and still appends')
  t.is(live.nextOffset, end + 1)
  t.deepEqual(Buffer.from(live.get(end).value), payloadFor(end))
  await live.close()
  await writer.close()

  // On a closed log, down to the file times.
  const before = snapshot(dir)
  await sleep(20)
  const reader = await openLog(t, dir, { readOnly: true })
  t.is(reader.nextOffset, end + 1)
  const x = payloadFor(0)
  t.throws(() => reader.append(x), { code: 'ERR_SEGLOG_READ_ONLY' })
  t.throws(() => reader.appendBatch([x]), { code: 'ERR_SEGLOG_READ_ONLY' })
  await t.throwsAsync(() => reader.appendDurable(x), { code: 'ERR_SEGLOG_READ_ONLY' })
  await t.throwsAsync(() => reader.sync(), { code: 'ERR_SEGLOG_READ_ONLY' })
  t.is(reader.nextOffset, end + 1)
  await reader.close()
  t.deepEqual(snapshot(dir), before)
})

test('readOnly options: durability is a RangeError; a missing directory or a file is ERR_SEGLOG_IO and nothing is created', async (t) => {
  const root = tempDir(t)
  await t.throwsAsync(() => Log.open(root, { readOnly: true, durability: 'none' }), { instanceOf: RangeError, code: 'ERR_SEGLOG_INVALID_ARGUMENT' })
  await t.throwsAsync(() => Log.open(root, { readOnly: true, durability: 'sync' }), { instanceOf: RangeError })
  await t.throwsAsync(() => Log.open(root, { readOnly: 'yes' }), { code: 'ERR_INVALID_ARG_TYPE' })

  const missing = path.join(root, 'missing', 'log')
  const err = await t.throwsAsync(() => Log.open(missing, { readOnly: true }), { code: 'ERR_SEGLOG_IO' })
  t.true(err.message.includes(missing), err.message)
  t.is(err.osCode, 'ENOENT')
  t.false(fs.existsSync(path.join(root, 'missing')), 'a reader creates no directory')

  const file = path.join(root, 'file')
  fs.writeFileSync(file, 'not a log')
  const notDir = await t.throwsAsync(() => Log.open(file, { readOnly: true }), { code: 'ERR_SEGLOG_IO' })
  t.true(notDir.message.includes(file), notDir.message)
  t.deepEqual(fs.readdirSync(root), ['file'])
})

test('verify() on a reader of a live log: records the writer appended since are not corruption', async (t) => {
  // A reader's view ends where the writer was when it last looked; whatever the writer
  // appended after that is "not yet" for the reader (DURABILITY.md rule 10), never a
  // problem: verify() must not report a healthy live log as damaged.
  const dir = tempDir(t)
  const writer = await openLog(t, dir, { segmentBytes: 128 << 10 })
  const w = planWriter(writer, SEED)
  w.appendUntil(planEnd(SEED, 10))
  const reader = await openLog(t, dir, { readOnly: true })
  t.like(await reader.verify(), { ok: true, problem: undefined })

  w.appendCall() // after the reader's last look, in its active segment
  const live = await reader.verify()
  t.true(live.ok, `verify() on the reader: ${JSON.stringify(live.problem)}`)

  t.is(reader.nextOffset, w.next)
  w.appendUntil(planEnd(SEED, w.next + 300)) // and across rolls
  const rolled = await reader.verify()
  t.true(rolled.ok, `verify() on the reader after the writer rolled: ${JSON.stringify(rolled.problem)}`)
  t.true((await writer.verify()).ok, 'the log itself is fine')
})

test('many readers at once, in this thread, alongside the writer: each sees the same records', async (t) => {
  const dir = tempDir(t)
  const writer = await openLog(t, dir, { segmentBytes: 128 << 10 })
  const w = planWriter(writer, SEED)
  const readers = []
  for (let i = 0; i < 4; i++) {
    w.appendUntil(planEnd(SEED, w.next + 50))
    readers.push(await openLog(t, dir, { readOnly: true }))
  }
  const end = planEnd(SEED, w.next + 500)
  w.appendUntil(end)
  for (const reader of readers) {
    t.is(reader.nextOffset, end)
    t.is(firstBadRecord(reader, 0, end), null)
  }
  // Closing a reader leaves the writer and the other readers alone.
  await readers[0].close()
  t.is(writer.append(payloadFor(end)), end)
  t.is(readers[1].nextOffset, end + 1)
  t.throws(() => readers[0].nextOffset, { code: 'ERR_SEGLOG_CLOSED' })
})
