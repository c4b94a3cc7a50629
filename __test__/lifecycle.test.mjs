// Guards the log's lifecycle as a user of the JS API relies on it: deleteBefore and
// retention (bytes, age, record count, cursors, archiveDir) remove exactly whole old
// segments and really free their disk space; reads below firstOffset fail with
// ERR_SEGLOG_OFFSET_OUT_OF_RANGE (iterators too, at their next fetch) while a readOnly
// reader in another process never crashes or returns a wrong record; truncate keeps
// exactly the prefix asked for, across segments and at batch bounds (never inside one), through a reopen;
// offsetForTimestamp equals a linear scan; cursors are durable, validated and usable as
// read/tail starting points; stats() agrees with the files on disk.
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import zlib from 'node:zlib'

import test from 'ava'

import { Log } from '../dist/index.mjs'
import { payloadFor, prng, timestampFor } from './helpers/payload.mjs'
import { openLog, spawnFixture, tempDir, waitForLine } from './helpers/temp.mjs'
import { checkGenRecord, genPayload } from './fixtures/lifecycle-payload.mjs'

const OUT_OF_RANGE = { code: 'ERR_SEGLOG_OFFSET_OUT_OF_RANGE' }
const DAY = 86_400_000

/** Disk space allocated to every file under `dir` (st_blocks * 512). */
function diskUsage(dir) {
  let total = 0
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    total += e.isDirectory() ? diskUsage(p) : fs.statSync(p).blocks * 512
  }
  return total
}

const segFiles = (dir) => fs.readdirSync(dir).filter((n) => /^\d{20}\.seg$/.test(n)).sort()
const idxOf = (segPath) => segPath.replace(/\.seg$/, '.idx')
const bytesOf = (v) => Buffer.from(v.buffer, v.byteOffset, v.byteLength)

/** Appends payloadFor(o) / timestampFor(o) for offsets `from` .. `from + n - 1`. */
function fill(log, n) {
  const from = log.nextOffset
  for (let o = from; o < from + n; o++) log.append(payloadFor(o), timestampFor(o))
}

/** Every record from `first` to nextOffset - 1 is payloadFor(offset) / timestampFor(offset). */
function checkRecords(t, log, first, where) {
  let expected = first
  let bad = 0
  for (const r of log.records()) {
    const ok = r.offset === expected && r.timestamp === timestampFor(r.offset) && Buffer.compare(bytesOf(r.value), payloadFor(r.offset)) === 0
    if (!ok && bad++ < 3) t.fail(`${where}: record ${r.offset} (expected ${expected}) is wrong`)
    expected++
  }
  t.is(bad, 0, `${where}: every record is right`)
  t.is(expected, log.nextOffset, `${where}: records() ends at nextOffset`)
}

async function checkVerify(t, log, where) {
  const report = await log.verify()
  t.true(report.ok, `${where}: verify ${JSON.stringify(report.problem)}`)
  t.is(report.firstOffset, log.firstOffset)
  t.is(report.records, log.nextOffset - log.firstOffset)
}

/** Every read path below `first` fails with ERR_SEGLOG_OFFSET_OUT_OF_RANGE. */
async function readsBelowFail(t, log, first) {
  t.throws(() => log.get(first - 1), OUT_OF_RANGE, 'get')
  t.throws(() => log.get(0), OUT_OF_RANGE, 'get(0)')
  t.throws(() => log.readBatch(first - 1), OUT_OF_RANGE, 'readBatch')
  t.throws(() => log.records({ from: 0 }).next(), OUT_OF_RANGE, 'records')
  // Thrown by the call or by the first next(): either way before any record.
  await t.throwsAsync(async () => log.read({ from: first - 1 }).next(), OUT_OF_RANGE, 'read')
  await t.throwsAsync(async () => log.tail({ from: first - 1 }).next(), OUT_OF_RANGE, 'tail')
}

// ------------------------------------------------------------------ deleteBefore

test('deleteBefore removes whole segments below the offset, frees their disk space, and reads below firstOffset fail', async (t) => {
  const dir = tempDir(t)
  let log = await openLog(t, dir, { segmentBytes: 16 << 10, durability: 'none' })
  fill(log, 150)
  const segs = log.segments()
  t.true(segs.length >= 6, `${segs.length} segments`)
  const usageBefore = diskUsage(dir)
  const statsBefore = log.stats()

  const removed = await log.deleteBefore(segs[3].baseOffset + 1)
  t.deepEqual(
    removed,
    segs.slice(0, 3).map((s) => ({ path: s.path, baseOffset: s.baseOffset, nextOffset: s.nextOffset, fileBytes: s.fileBytes })),
  )
  const first = segs[3].baseOffset
  t.is(log.firstOffset, first)
  for (const r of removed) {
    t.false(fs.existsSync(r.path), `${r.path} removed`)
    t.false(fs.existsSync(idxOf(r.path)), `its index removed`)
  }
  const removedBytes = removed.reduce((sum, r) => sum + r.fileBytes, 0)
  const freed = usageBefore - diskUsage(dir)
  t.true(freed >= removedBytes, `the directory's disk usage dropped by ${freed} bytes, the removed segments hold ${removedBytes}`)
  const statsAfter = log.stats()
  t.true(statsBefore.bytesOnDisk - statsAfter.bytesOnDisk >= removedBytes, 'stats().bytesOnDisk dropped as much')
  t.is(statsAfter.firstOffset, first)
  t.is(statsAfter.records, log.nextOffset - first)
  t.is(statsAfter.segmentCount, segs.length - 3)

  await readsBelowFail(t, log, first)
  t.deepEqual(bytesOf(log.get(first).value), payloadFor(first))
  checkRecords(t, log, first, 'after deleteBefore')
  await checkVerify(t, log, 'after deleteBefore')

  t.deepEqual(await log.deleteBefore(first), [], 'nothing more below the first segment')
  t.deepEqual(await log.deleteBefore(0), [])
  const all = await log.deleteBefore(Number.MAX_SAFE_INTEGER)
  t.is(all.length, segs.length - 4, 'every sealed segment, never the active one')
  t.is(log.firstOffset, segs.at(-1).baseOffset)
  t.deepEqual(segFiles(dir), [path.basename(segs.at(-1).path)])
  await t.throwsAsync(log.deleteBefore(-1), { code: 'ERR_SEGLOG_INVALID_ARGUMENT' })
  await t.throwsAsync(log.deleteBefore('5'), { code: 'ERR_INVALID_ARG_TYPE' })

  const end = log.nextOffset
  fill(log, 20)
  await log.close()
  log = await openLog(t, dir, { segmentBytes: 16 << 10 })
  t.is(log.firstOffset, segs.at(-1).baseOffset, 'the new firstOffset survives a reopen')
  t.is(log.nextOffset, end + 20)
  checkRecords(t, log, log.firstOffset, 'after reopen')
  await checkVerify(t, log, 'after reopen')
})

test('deleteBefore is refused on a readOnly log', async (t) => {
  const dir = tempDir(t)
  const writer = await openLog(t, dir, { segmentBytes: 4096 })
  fill(writer, 20)
  const reader = await openLog(t, dir, { readOnly: true })
  await t.throwsAsync(reader.deleteBefore(10), { code: 'ERR_SEGLOG_READ_ONLY' })
  await t.throwsAsync(reader.truncate(10), { code: 'ERR_SEGLOG_READ_ONLY' })
  await t.throwsAsync(reader.enforceRetention(), { code: 'ERR_SEGLOG_READ_ONLY' })
  t.is(writer.firstOffset, 0)
})

/** Fixed-size records, so the engine's batch sizes are predictable: 1000 bytes each. */
function fixedValue(o) {
  const b = Buffer.alloc(1000, o & 0xff)
  b.writeUInt32LE(o, 0)
  return b
}

test("an iterator on the writer's own log inside a removed segment fails at its next fetch, after the records it already fetched", async (t) => {
  const dir = tempDir(t)
  const log = await openLog(t, dir, { segmentBytes: 256 << 10, durability: 'none' })
  for (let o = 0; o < 700; o++) log.append(fixedValue(o), 1000 + o)
  t.true(log.segments().length >= 3)

  const kinds = {
    records: (l) => l.records(),
    read: (l) => l.read(),
    tail: (l) => l.tail({ from: l.firstOffset, maxRecords: 10 }),
  }
  for (const [kind, open] of Object.entries(kinds)) {
    const it = open(log)
    const firstOne = await it.next()
    const start = firstOne.value.offset
    await log.deleteBefore(log.nextOffset) // removes the segment the iterator is in
    const yielded = [firstOne.value]
    let error
    try {
      for (;;) {
        const { value, done } = await it.next()
        if (done) break
        yielded.push(value)
      }
    } catch (err) {
      error = err
    }
    t.is(error?.code, 'ERR_SEGLOG_OFFSET_OUT_OF_RANGE', `${kind}: ${error}`)
    t.true(yielded.length > 1, `${kind}: the records of the batch already fetched are still yielded (${yielded.length})`)
    yielded.forEach((r, i) => {
      t.is(r.offset, start + i)
      t.deepEqual(bytesOf(r.value), fixedValue(r.offset), `${kind}: record ${r.offset} intact`)
    })
    t.true(yielded.at(-1).offset + 1 < log.firstOffset, `${kind}: it failed reading below firstOffset`)
    for (let o = 0; o < 700; o++) log.append(fixedValue(log.nextOffset), 1000) // a segment to remove next time
  }
})

test('a readOnly log keeps reading the segments it mapped when the writer removes them, and drops them at its next refresh', async (t) => {
  const dir = tempDir(t)
  const writer = await openLog(t, dir, { segmentBytes: 64 << 10, durability: 'none' })
  fill(writer, 200)
  const reader = await openLog(t, dir, { readOnly: true })
  const end = reader.nextOffset
  const it = reader.records({ from: 0 })
  const got = [it.next().value]
  await writer.deleteBefore(writer.nextOffset)
  const removedUpTo = writer.firstOffset
  t.true(removedUpTo > 100)
  for (const r of it) got.push(r)
  t.is(got.length, end, 'the reader finished what it had started')
  got.forEach((r, i) => t.true(r.offset === i && Buffer.compare(bytesOf(r.value), payloadFor(i)) === 0, `record ${i}`))

  // Reading the next offset refreshes: the removed segments are dropped.
  t.is(reader.nextOffset, writer.nextOffset)
  t.is(reader.firstOffset, removedUpTo)
  t.throws(() => reader.get(0), OUT_OF_RANGE)
  checkRecords(t, reader, removedUpTo, 'reader after refresh')
})

test('records() and read() without `from` on a readOnly log start at the current firstOffset after the writer removed segments', async (t) => {
  const dir = tempDir(t)
  const writer = await openLog(t, dir, { segmentBytes: 16 << 10, durability: 'none' })
  fill(writer, 100)
  const reader = await openLog(t, dir, { readOnly: true })
  t.is(reader.firstOffset, 0)
  await writer.deleteBefore(50)
  const first = writer.firstOffset
  t.true(first > 0)
  // The documented default of `from` is firstOffset: no offset was given, so nothing
  // can be "out of range".
  const offsets = [...reader.records()].map((r) => r.offset)
  t.is(offsets[0], first)
  t.is(offsets.length, writer.nextOffset - first)
  await writer.deleteBefore(writer.nextOffset)
  const again = []
  for await (const r of reader.read()) again.push(r.offset)
  t.is(again[0], writer.firstOffset)
})

// ------------------------------------------------------------------ retention

test('retentionBytes keeps the segment files within the limit at every roll', async (t) => {
  const dir = tempDir(t)
  const segmentBytes = 8192
  const log = await openLog(t, dir, { segmentBytes, retentionBytes: 3 * segmentBytes, durability: 'none' })
  let maxFiles = 0
  for (let o = 0; o < 200; o++) {
    log.append(payloadFor(o), timestampFor(o))
    const files = segFiles(dir)
    maxFiles = Math.max(maxFiles, files.length)
    t.true(files.length <= 3, `after offset ${o}: ${files.length} segment files`)
  }
  t.is(maxFiles, 3, 'no more removed than needed')
  t.is(log.segments().length, 3)
  t.is(log.firstOffset, log.segments()[0].baseOffset)
  t.true(log.firstOffset > 0)
  t.is(log.stats().retentionError, undefined)
  t.deepEqual(await log.enforceRetention(), [])
  checkRecords(t, log, log.firstOffset, 'retentionBytes')
  await checkVerify(t, log, 'retentionBytes')
})

test('retentionRecords keeps at least that many records and removes what is not needed for them', async (t) => {
  const dir = tempDir(t)
  const log = await openLog(t, dir, { segmentBytes: 8192, retentionRecords: 50, durability: 'none' })
  fill(log, 300)
  await log.enforceRetention()
  const segs = log.segments()
  t.true(segs.length > 1)
  t.true(log.nextOffset - log.firstOffset >= 50, `${log.nextOffset - log.firstOffset} records kept`)
  t.true(log.nextOffset - segs[0].nextOffset < 50, 'removing one more segment would keep fewer than 50')
  checkRecords(t, log, log.firstOffset, 'retentionRecords')
  const first = log.firstOffset
  await log.close()
  const again = await openLog(t, dir, { segmentBytes: 8192 })
  t.is(again.firstOffset, first)
  checkRecords(t, again, first, 'retentionRecords after reopen')
})

test('retentionMs removes segments whose newest record timestamp is too old, at rolls and on enforceRetention', async (t) => {
  const dir = tempDir(t)
  const log = await openLog(t, dir, { segmentBytes: 4096, retentionMs: DAY, durability: 'none' })
  // Records from 2020 (timestampFor): every sealed segment is expired at once.
  fill(log, 60)
  t.true(log.nextOffset > 20)
  t.is(log.segments().length, 1, 'only the active segment is left')
  t.is(log.firstOffset, log.segments()[0].baseOffset)
  // Then fresh records, then old ones again: the segments holding fresh records stay,
  // and so does everything after them (removal is from the front).
  const firstFresh = log.nextOffset
  const now = Date.now()
  for (let i = 0; i < 20; i++) log.append(payloadFor(firstFresh + i), now - 1000)
  const firstOldAgain = log.nextOffset
  for (let i = 0; i < 30; i++) log.append(payloadFor(firstOldAgain + i), timestampFor(0))
  t.deepEqual(await log.enforceRetention(), [])
  t.true(log.firstOffset <= firstFresh, 'fresh records are kept')
  t.true(log.firstOffset > firstFresh - 10, 'the old records before them went')
  const bounds = log.timestampBounds()
  t.true(bounds.segments[0].max >= now - DAY, 'the first segment holds a fresh record')
  t.is(bounds.max, now - 1000)
  t.is(bounds.min, timestampFor(0))
  for (let o = log.firstOffset; o < log.nextOffset; o++) t.deepEqual(bytesOf(log.get(o).value), payloadFor(o))
  await checkVerify(t, log, 'retentionMs')
})

test('retainForCursors never removes records at or after the slowest committed cursor', async (t) => {
  const dir = tempDir(t)
  const log = await openLog(t, dir, { segmentBytes: 4096, retentionBytes: 0, retainForCursors: true, durability: 'none' })
  const slow = log.cursor('slow')
  await slow.commit(0) // before any roll can remove anything
  fill(log, 5)
  await slow.commit(3)
  const fast = log.cursor('fast')
  fill(log, 100)
  await fast.commit(log.nextOffset)
  const holding = (o) => {
    const s = log.segments()[0]
    return s.baseOffset <= o && o < s.nextOffset
  }
  t.true(holding(3), `the first segment holds the slow cursor's position (firstOffset ${log.firstOffset})`)
  await slow.commit(60)
  await log.enforceRetention()
  t.true(holding(60), `after the slow cursor moved to 60, firstOffset ${log.firstOffset}`)
  checkRecords(t, log, log.firstOffset, 'retainForCursors')
  t.true(await slow.delete())
  await log.enforceRetention()
  t.is(log.segments().length, 1, 'with only the cursor at the end left, only the active segment stays')
  t.is(log.stats().retentionError, undefined)
})

test('archiveDir receives removed segments and their indexes, byte for byte, and they form a readable log', async (t) => {
  const dir = tempDir(t)
  const archive = path.join(tempDir(t), 'archive')
  const log = await openLog(t, dir, { segmentBytes: 8192, archiveDir: archive, durability: 'none' })
  fill(log, 60)
  const segs = log.segments()
  t.true(segs.length >= 5)
  await log.close() // indexes written, nothing changes below
  const files = new Map()
  for (const n of fs.readdirSync(dir)) if (/\.(seg|idx)$/.test(n)) files.set(n, fs.readFileSync(path.join(dir, n)))
  const log2 = await openLog(t, dir, { segmentBytes: 8192, archiveDir: archive })
  const removed = await log2.deleteBefore(segs[3].baseOffset)
  t.deepEqual(
    removed.map((r) => r.archivedTo),
    segs.slice(0, 3).map((s) => path.join(archive, path.basename(s.path))),
  )
  const archived = fs.readdirSync(archive).sort()
  t.deepEqual(archived, segs.slice(0, 3).flatMap((s) => [path.basename(idxOf(s.path)), path.basename(s.path)]).sort())
  for (const n of archived) {
    t.true(fs.readFileSync(path.join(archive, n)).equals(files.get(n)), `${n} archived byte for byte`)
    t.false(fs.existsSync(path.join(dir, n)), `${n} left the log directory`)
  }
  checkRecords(t, log2, segs[3].baseOffset, 'after archiving')
  const old = await openLog(t, archive, { readOnly: true })
  t.is(old.firstOffset, 0)
  t.is(old.nextOffset, segs[3].baseOffset)
  for (const r of old.records()) t.deepEqual(bytesOf(r.value), payloadFor(r.offset))
})

// ------------------------------------------------------------------ truncate

test('truncate then append then reopen: within a segment, across segments, to the first offset', async (t) => {
  const dir = tempDir(t)
  const opts = { segmentBytes: 8192, durability: 'none' }
  let log = await openLog(t, dir, opts)
  const model = [] // model[o] = generation
  const append = (generation, n) => {
    for (let i = 0; i < n; i++) {
      const o = log.nextOffset
      t.is(log.append(genPayload(o, generation, 5000 + o), 5000 + o), o)
      model[o] = generation
    }
  }
  const check = async (where) => {
    t.is(log.nextOffset, model.length, `${where}: nextOffset`)
    let expected = log.firstOffset
    for (const r of log.records()) {
      const got = checkGenRecord(r)
      t.true(r.offset === expected++ && typeof got === 'object' && got.generation === model[r.offset], `${where}: record ${r.offset}: ${JSON.stringify(got)}`)
    }
    t.is(expected, model.length)
    await checkVerify(t, log, where)
  }
  append(0, 150)
  const segs = log.segments()
  t.true(segs.length >= 5)

  // Within the active segment.
  let r = await log.truncate(model.length - 3)
  t.deepEqual(r, { previousNextOffset: 150, nextOffset: 147, recordsRemoved: 3, segmentsRemoved: [] })
  model.length = 147
  append(1, 5)
  await check('within a segment')

  // Across segments: later segments are deleted, their files gone.
  const before = log.segments()
  const cut = before[1].baseOffset + 2
  const previous = log.nextOffset
  r = await log.truncate(cut)
  t.is(r.previousNextOffset, previous)
  t.is(r.nextOffset, cut)
  t.is(r.recordsRemoved, previous - cut)
  t.deepEqual(
    r.segmentsRemoved.map((s) => s.baseOffset).sort((a, b) => a - b),
    before.slice(2).map((s) => s.baseOffset),
  )
  for (const s of r.segmentsRemoved) {
    t.false(fs.existsSync(s.path))
    t.false(fs.existsSync(idxOf(s.path)))
    t.is(s.archivedTo, undefined)
  }
  t.deepEqual(segFiles(dir), before.slice(0, 2).map((s) => path.basename(s.path)))
  model.length = cut
  append(2, 40)
  await check('across segments')
  await log.close()
  log = await openLog(t, dir, opts)
  t.is(log.recovery.truncation, undefined)
  await check('across segments, reopened')

  // No-ops and limits.
  const n = log.nextOffset
  t.deepEqual(await log.truncate(n), { previousNextOffset: n, nextOffset: n, recordsRemoved: 0, segmentsRemoved: [] })
  t.deepEqual(await log.truncate(n + 10), { previousNextOffset: n, nextOffset: n, recordsRemoved: 0, segmentsRemoved: [] })
  await log.deleteBefore(segs[1].baseOffset)
  const first = log.firstOffset
  t.is(first, segs[1].baseOffset)
  await t.throwsAsync(log.truncate(first - 1), OUT_OF_RANGE)
  await t.throwsAsync(log.truncate(-1), { code: 'ERR_SEGLOG_INVALID_ARGUMENT' })
  await check('after refused truncations')

  // Down to the first offset: an empty log that keeps its offsets.
  await log.truncate(first)
  model.length = first
  t.is(log.nextOffset, first)
  t.is(log.firstOffset, first)
  t.is(log.get(first), undefined)
  t.deepEqual([...log.records()], [])
  t.is(log.offsetForTimestamp(0), undefined)
  await log.close()
  log = await openLog(t, dir, opts)
  t.is(log.firstOffset, first)
  t.is(log.nextOffset, first)
  append(3, 30)
  await check('emptied, reopened and appended')
  await log.close()
  log = await openLog(t, dir, opts)
  await check('final reopen')
})

test('truncate inside an atomic batch is refused with its bounds and changes nothing; its bounds work, also after a reopen', async (t) => {
  const dir = tempDir(t)
  let log = await openLog(t, dir, { segmentBytes: 8192, durability: 'none' })
  for (let o = 0; o < 5; o++) log.append(genPayload(o, 0, 77), 77)
  const batch = Array.from({ length: 10 }, (_, i) => genPayload(5 + i, 0, 88))
  t.is(log.appendBatch(batch, 88), 5)
  log.append(genPayload(15, 0, 99), 99)
  for (const inside of [6, 9, 14]) {
    const err = await t.throwsAsync(log.truncate(inside), { instanceOf: RangeError, code: 'ERR_SEGLOG_INVALID_ARGUMENT' })
    t.regex(err.message, /offsets 5 to 14/)
    t.is(log.nextOffset, 16, 'nothing was removed')
  }
  t.is((await log.truncate(15)).recordsRemoved, 1)
  t.is((await log.truncate(5)).recordsRemoved, 10)
  t.is(log.nextOffset, 5)
  t.is(log.appendBatch([genPayload(5, 1, 5), genPayload(6, 1, 5)], 5), 5)
  await log.close()
  log = await openLog(t, dir, { segmentBytes: 8192 })
  t.is(log.recovery.truncation, undefined, 'recovery cut nothing')
  t.is(log.nextOffset, 7)
  for (const rec of log.records()) t.is(typeof checkGenRecord(rec), 'object')
  t.deepEqual(bytesOf(log.get(6).value), genPayload(6, 1, 5))
  await checkVerify(t, log, 'batch truncated')
})

test('truncate waits for pending durable appends and the log takes durable appends after it', async (t) => {
  const dir = tempDir(t)
  const log = await openLog(t, dir, { segmentBytes: 8192, durability: 'none' })
  fill(log, 10)
  const pending = log.appendDurable(payloadFor(10), timestampFor(10))
  await log.truncate(5)
  t.is(await pending, 10, 'the durable append resolved (its record was synced before it was removed)')
  t.true(log.durableOffset <= log.nextOffset)
  t.is(await log.appendDurable(payloadFor(5), timestampFor(5)), 5)
  t.is(log.durableOffset, 6)
  checkRecords(t, log, 0, 'after truncate and appendDurable')
})

// ------------------------------------------------------------------ time

test('offsetForTimestamp equals a linear scan on random non-monotonic timestamps; read({ since }) and timestampBounds agree', async (t) => {
  const seed = 20240611
  const random = prng(seed)
  const dir = tempDir(t)
  const opts = { segmentBytes: 4096, indexIntervalBytes: 64, durability: 'none' }
  let log = await openLog(t, dir, opts)
  const ts = []
  while (ts.length < 500) {
    const t0 = 1_000 + Math.floor(random() * 60) + (random() < 0.05 ? 10_000 : 0)
    if (random() < 0.2) {
      const n = 1 + Math.floor(random() * 5)
      log.appendBatch(Array.from({ length: n }, () => Buffer.alloc(Math.floor(random() * 300), 7)), t0)
      for (let i = 0; i < n; i++) ts.push(t0)
    } else {
      log.append(Buffer.alloc(Math.floor(random() * 600), 9), t0)
      ts.push(t0)
    }
  }
  t.true(log.segments().length > 5)
  const check = async (l, first, where) => {
    const scan = (q) => {
      for (let o = first; o < ts.length; o++) if (ts[o] >= q) return o
      return undefined
    }
    const values = [...new Set(ts.slice(first))]
    const queries = [0, 999, 1_000_000, ...values.flatMap((v) => [v - 1, v, v + 1])]
    for (const q of queries) t.is(l.offsetForTimestamp(q), scan(q), `${where}: offsetForTimestamp(${q})`)
    for (const q of [0, values[0], 1_030, 11_000, 1_000_000]) {
      const want = scan(q)
      const got = []
      for await (const r of l.read({ since: q })) got.push(r.offset)
      t.deepEqual(got, want === undefined ? [] : Array.from({ length: ts.length - want }, (_, i) => want + i), `${where}: read({ since: ${q} })`)
    }
    const bounds = l.timestampBounds()
    const live = ts.slice(first)
    t.is(bounds.min, Math.min(...live), `${where}: timestampBounds().min`)
    t.is(bounds.max, Math.max(...live), `${where}: timestampBounds().max`)
    for (const s of bounds.segments) {
      const own = ts.slice(s.baseOffset, s.nextOffset)
      t.is(s.min, own.length ? Math.min(...own) : undefined, `${where}: segment ${s.baseOffset} min`)
      t.is(s.max, own.length ? Math.max(...own) : undefined, `${where}: segment ${s.baseOffset} max`)
    }
  }
  await check(log, 0, 'live')
  const reader = await openLog(t, dir, { readOnly: true })
  await check(reader, 0, 'reader')
  await log.close()
  log = await openLog(t, dir, opts)
  await check(log, 0, 'reopened')
  await log.deleteBefore(200)
  await check(log, log.firstOffset, 'after deleteBefore')
  await log.truncate(400)
  ts.length = 400
  await check(log, log.firstOffset, 'after truncate')

  t.throws(() => log.offsetForTimestamp(-1), { code: 'ERR_SEGLOG_INVALID_ARGUMENT' })
  t.throws(() => log.offsetForTimestamp('5'), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => log.records({ from: log.firstOffset, since: 5 }).next(), { code: 'ERR_INVALID_ARG_TYPE' })
})

// ------------------------------------------------------------------ cursors

test('cursors: position, commit, delete, listing, reopen, and read/tail from a cursor', async (t) => {
  const dir = tempDir(t)
  let log = await openLog(t, dir, { segmentBytes: 8192, durability: 'none' })
  fill(log, 40)
  const c = log.cursor('billing')
  t.is(c.name, 'billing')
  t.false(c.committed)
  t.is(c.position, 0, 'never committed: firstOffset')
  t.deepEqual(log.cursors(), [])

  const before = Date.now()
  await c.commit(12)
  const after = Date.now()
  t.true(c.committed)
  t.is(c.position, 12)
  const listed = log.cursors()
  t.is(listed.length, 1)
  t.is(listed[0].name, 'billing')
  t.is(listed[0].position, 12)
  t.true(listed[0].committedMs >= before - 1 && listed[0].committedMs <= after + 1, 'committedMs is the commit time')
  t.is(log.cursor('billing').position, 12, 'a new handle reads the committed position')

  // From a cursor: its position, inclusive.
  t.deepEqual([...log.records({ from: c })].map((r) => r.offset), Array.from({ length: 28 }, (_, i) => 12 + i))
  const fromRead = []
  for await (const r of log.read({ from: c, to: 15 })) fromRead.push(r.offset)
  t.deepEqual(fromRead, [12, 13, 14])
  const controller = new AbortController()
  const tailed = []
  const tailing = (async () => {
    for await (const r of log.tail({ from: c, signal: controller.signal })) {
      tailed.push(r.offset)
      if (r.offset === 41) controller.abort()
    }
  })()
  await sleep(5)
  fill(log, 2)
  await tailing
  t.deepEqual(tailed, Array.from({ length: 30 }, (_, i) => 12 + i), 'tail from a cursor yields from its position, then new records')

  // Up to nextOffset; past it is refused and changes nothing.
  await c.commit(log.nextOffset)
  await t.throwsAsync(c.commit(log.nextOffset + 1), { instanceOf: RangeError, code: 'ERR_SEGLOG_INVALID_ARGUMENT' })
  t.is(c.position, log.nextOffset)
  t.is(log.cursor('billing').position, log.nextOffset)
  await t.throwsAsync(c.commit(-1), { code: 'ERR_SEGLOG_INVALID_ARGUMENT' })
  await t.throwsAsync(c.commit('3'), { instanceOf: TypeError })
  await c.commit(7)
  t.is(log.cursor('billing').position, 7, 'a cursor may move back')

  await log.cursor('a.b-c_9').commit(1)
  await log.cursor('Z').commit(2)
  t.deepEqual(
    log.cursors().map((x) => [x.name, x.position]),
    [['Z', 2], ['a.b-c_9', 1], ['billing', 7]],
  )
  t.true(fs.statSync(path.join(dir, 'cursors', 'billing.cursor')).isFile())
  t.deepEqual(fs.readdirSync(path.join(dir, 'cursors')).filter((n) => n.endsWith('.tmp')), [])

  // A cursor outlives segments removed under it: reading from it then says the data is gone.
  const segs = log.segments()
  await log.deleteBefore(segs[2].baseOffset)
  t.is(log.cursor('billing').position, 7)
  t.throws(() => log.records({ from: log.cursor('billing') }).next(), OUT_OF_RANGE)
  await t.throwsAsync(async () => log.tail({ from: log.cursor('billing') }).next(), OUT_OF_RANGE)
  const fresh = log.cursor('fresh')
  t.is(fresh.position, log.firstOffset, 'an uncommitted cursor starts at firstOffset')

  await log.close()
  log = await openLog(t, dir, { segmentBytes: 8192 })
  const again = log.cursor('billing')
  t.true(again.committed)
  t.is(again.position, 7, 'survives a reopen')
  t.true(await again.delete())
  t.false(again.committed)
  t.is(again.position, log.firstOffset)
  t.false(await again.delete(), 'deleting twice reports it was not there')
  t.false(fs.existsSync(path.join(dir, 'cursors', 'billing.cursor')))
  t.deepEqual(log.cursors().map((x) => x.name), ['Z', 'a.b-c_9'])
  await log.close()
  t.throws(() => log.cursor('x'), { code: 'ERR_SEGLOG_CLOSED' })
  t.throws(() => log.cursors(), { code: 'ERR_SEGLOG_CLOSED' })
  await t.throwsAsync(async () => again.commit(1), { code: 'ERR_SEGLOG_CLOSED' })
  await t.throwsAsync(async () => again.delete(), { code: 'ERR_SEGLOG_CLOSED' })
})

test('cursor names are validated', async (t) => {
  const dir = tempDir(t)
  const log = await openLog(t, dir, { segmentBytes: 8192 })
  fill(log, 3)
  for (const bad of ['', '.', '.hidden', 'a/b', '../x', 'a b', 'ü', 'a\0b', 'x'.repeat(201)]) {
    t.throws(() => log.cursor(bad), { instanceOf: RangeError, code: 'ERR_SEGLOG_INVALID_ARGUMENT' }, JSON.stringify(bad))
  }
  for (const bad of [5, undefined, null, {}]) t.throws(() => log.cursor(bad), { instanceOf: TypeError }, String(bad))
  const longest = log.cursor('x'.repeat(200))
  await longest.commit(2)
  t.is(log.cursor('x'.repeat(200)).position, 2)
  t.deepEqual(fs.readdirSync(dir).filter((n) => !/\.(seg|idx|lock)$/.test(n)), ['cursors'], 'nothing written outside cursors/')
})

test('cursor files follow FORMAT.md 9, and a damaged one is ERR_SEGLOG_CORRUPT naming the file', async (t) => {
  const dir = tempDir(t)
  const log = await openLog(t, dir, { segmentBytes: 8192 })
  fill(log, 30)
  await log.cursor('c').commit(21)
  const file = path.join(dir, 'cursors', 'c.cursor')
  const b = fs.readFileSync(file)
  t.is(b.length, 40)
  t.deepEqual(b.subarray(0, 8), Buffer.from('SEGLOG\0C', 'latin1'))
  t.is(b.readUInt32LE(8), 1)
  t.is(Number(b.readBigUInt64LE(16)), 21)
  t.is(Number(b.readBigUInt64LE(24)), log.cursors()[0].committedMs)
  t.is(b.readUInt32LE(36), zlib.crc32(b.subarray(0, 36)))

  const damaged = Buffer.from(b)
  damaged[17] ^= 1
  fs.writeFileSync(file, damaged)
  const e = t.throws(() => log.cursor('c'), { code: 'ERR_SEGLOG_CORRUPT' })
  t.true(e.message.includes(file), e.message)
  t.throws(() => log.cursors(), { code: 'ERR_SEGLOG_CORRUPT' })
  fs.writeFileSync(file, b.subarray(0, 39))
  t.throws(() => log.cursor('c'), { code: 'ERR_SEGLOG_CORRUPT' })
})

test('a readOnly log reads and commits cursors, and a corrupt cursor stops cursor-held retention with retentionError', async (t) => {
  const dir = tempDir(t)
  const writer = await openLog(t, dir, { segmentBytes: 4096, retentionBytes: 0, retainForCursors: true, durability: 'none' })
  fill(writer, 10)
  const reader = await openLog(t, dir, { readOnly: true })
  const rc = reader.cursor('reader')
  await rc.commit(4)
  t.is(writer.cursor('reader').position, 4, "the writer sees the reader's commit")
  fill(writer, 5)
  await rc.commit(15) // the reader catches up with the writer to check the position
  await t.throwsAsync(rc.commit(16), { code: 'ERR_SEGLOG_INVALID_ARGUMENT' })
  await rc.commit(4)

  const file = path.join(dir, 'cursors', 'reader.cursor')
  const b = fs.readFileSync(file)
  b[20] ^= 0xff
  fs.writeFileSync(file, b)
  const first = writer.firstOffset
  fill(writer, 60) // rolls: retention cannot tell where the cursor is
  t.is(writer.firstOffset, first, 'nothing removed')
  const stats = writer.stats()
  t.is(typeof stats.retentionError, 'string')
  t.true(stats.retentionError.includes('reader.cursor'), stats.retentionError)
  await t.throwsAsync(writer.enforceRetention(), { code: 'ERR_SEGLOG_CORRUPT' })
  checkRecords(t, writer, first, 'with a corrupt cursor')
})

// ------------------------------------------------------------------ stats

test('stats() agrees with the files on disk and the log', async (t) => {
  const dir = tempDir(t)
  const log = await openLog(t, dir, { segmentBytes: 8192, durability: 'interval' })
  fill(log, 50)
  await log.sync()
  await log.deleteBefore(log.segments()[2].baseOffset)
  const s = log.stats()
  const segs = log.segments()
  let fileBytes = 0
  let bytesOnDisk = 0
  for (const n of fs.readdirSync(dir).filter((x) => /\.(seg|idx)$/.test(x))) {
    const st = fs.statSync(path.join(dir, n))
    fileBytes += st.size
    bytesOnDisk += st.blocks * 512
  }
  t.is(s.firstOffset, log.firstOffset)
  t.is(s.nextOffset, 50)
  t.is(s.records, 50 - log.firstOffset)
  t.is(s.segmentCount, segs.length)
  t.deepEqual(s.segments, segs)
  t.is(s.indexEntries, segs.reduce((sum, x) => sum + x.indexEntries, 0))
  t.true(s.indexEntries >= segs.length - 1)
  t.is(s.fileBytes, fileBytes)
  t.is(s.bytesOnDisk, bytesOnDisk)
  t.true(s.bytesOnDisk >= segs.length * 8192, 'segments are preallocated')
  t.is(s.durability.mode, 'interval')
  t.is(s.durability.durableOffset, 50)
  t.true(s.durability.syncs >= 1)
  t.is(typeof s.durability.lastSyncMs, 'number')
  t.is(s.durability.poisoned, undefined)
  t.is(s.retentionError, undefined)

  const reader = await openLog(t, dir, { readOnly: true })
  const rs = reader.stats()
  t.is(rs.durability.mode, 'readOnly')
  t.is(rs.firstOffset, s.firstOffset)
  t.is(rs.records, s.records)
})

// ------------------------------------------------------------------ removal under a reader in another process

test('deleteBefore and retention while readOnly readers in other processes read: no crash, no wrong record', async (t) => {
  const dir = tempDir(t)
  const stopFile = path.join(tempDir(t), 'stop')
  const log = await openLog(t, dir, { segmentBytes: 64 << 10, retentionRecords: 400, durability: 'none' })
  fill(log, 300)
  const readers = [0, 1].map((id) => spawnFixture(t, 'lifecycle-reader.mjs', [dir, stopFile, String(id)]))
  await Promise.all(readers.map((r) => waitForLine(r, (l) => l === 'ready')))
  const passes = readers.map(() => 0)
  const outputs = readers.map((r, i) => {
    let out = ''
    r.stdout.on('data', (s) => {
      out += s
      passes[i] = (out.match(/^pass \d+$/gm) ?? []).length
    })
    return () => out
  })
  let deletes = 0
  let removedSegments = 0
  // Until every reader has read the log over many times (each pass starts where the
  // reader last saw the log begin, often in segments removed since).
  for (let round = 0; round < 50_000 && (round < 300 || passes.some((p) => p < 15)); round++) {
    fill(log, 20)
    if (round % 5 === 4) {
      // Remove up to a random point in the last few segments.
      const segs = log.segments()
      const target = segs[Math.max(0, segs.length - 1 - (round % 3))].baseOffset + 1
      removedSegments += (await log.deleteBefore(target)).length
      deletes++
    }
    await sleep(round % 10 === 0 ? 5 : 1)
  }
  t.true(log.firstOffset > 0)
  fs.writeFileSync(stopFile, '')
  const results = await Promise.all(readers.map((r) => r.exited))
  for (const [i, { code, signal }] of results.entries()) {
    const out = outputs[i]()
    t.is(signal, null, `reader ${i} was not killed by a signal (SIGBUS would mean it touched a removed mapping): ${readers[i].stderrText}`)
    t.is(code, 0, `reader ${i}: ${out.split('\n').find((l) => l.startsWith('BAD')) ?? ''} ${readers[i].stderrText}`)
    const stats = JSON.parse(out.trim().split('\n').at(-1))
    t.true(stats.passes >= 15, `reader ${i} read the log ${stats.passes} times while the writer removed segments`)
    t.true(stats.records > 0, `reader ${i} read records`)
    t.log(`reader ${i}: ${JSON.stringify(stats)}`)
  }
  t.log(`${deletes} deleteBefore calls removed ${removedSegments} segments; retention removed more; log now [${log.firstOffset}, ${log.nextOffset})`)
  checkRecords(t, log, log.firstOffset, 'writer after the readers')
})

test('truncate while readOnly readers in other processes read: no crash, no garbage, and a reopened reader sees exactly the writer', async (t) => {
  const dir = tempDir(t)
  const stopFile = path.join(tempDir(t), 'stop')
  const log = await openLog(t, dir, { segmentBytes: 16 << 10, durability: 'none' })
  const random = prng(4242)
  let generation = 0
  const append = (n) => {
    for (let i = 0; i < n; i++) {
      const offset = log.nextOffset
      const ts = 1_700_000_000_000 + offset
      log.append(genPayload(offset, generation, ts), ts)
    }
  }
  append(400)
  const readers = [0, 1].map(() => spawnFixture(t, 'lifecycle-truncate-reader.mjs', [dir, stopFile]))
  await Promise.all(readers.map((r) => waitForLine(r, (l) => l === 'ready')))
  const outputs = readers.map((r) => {
    let out = ''
    r.stdout.on('data', (s) => (out += s))
    return () => out
  })
  let truncations = 0
  for (let round = 0; round < 150; round++) {
    append(20 + Math.floor(random() * 60))
    if (round % 3 === 2) {
      // Cut back a random amount, often across segments, then write a new generation.
      const cut = Math.max(log.firstOffset, log.nextOffset - 1 - Math.floor(random() * 150))
      await log.truncate(cut)
      generation++
      truncations++
    }
    await sleep(round % 10 === 0 ? 5 : 1)
  }
  fs.writeFileSync(stopFile, '')
  const results = await Promise.all(readers.map((r) => r.exited))
  t.true(log.nextOffset > 1000, `the log grew: ${log.nextOffset}`)
  for (const [i, { code, signal }] of results.entries()) {
    const out = outputs[i]()
    t.is(signal, null, `reader ${i} was not killed by a signal: ${readers[i].stderrText}`)
    t.is(code, 0, `reader ${i}: ${out.split('\n').find((l) => l.startsWith('BAD')) ?? ''} ${readers[i].stderrText}`)
    const stats = JSON.parse(out.trim().split('\n').at(-1))
    t.true(stats.passes > 10 && stats.records > 0, `reader ${i} kept reading: ${JSON.stringify(stats)}`)
    // A reader follows truncations (FORMAT.md 2.3): most passes read cleanly.
    t.true((stats.errors.ERR_SEGLOG_CORRUPT ?? 0) < stats.passes / 2, `reader ${i} recovered from truncations: ${JSON.stringify(stats)}`)
    t.log(`reader ${i}: ${JSON.stringify(stats)}`)
  }
  // A reader opened now sees exactly what the writer has.
  const fresh = await openLog(t, dir, { readOnly: true })
  t.is(fresh.nextOffset, log.nextOffset)
  const mine = [...log.records()].map((r) => Buffer.from(r.value).toString('hex'))
  const theirs = [...fresh.records()].map((r) => Buffer.from(r.value).toString('hex'))
  t.deepEqual(theirs, mine)
  t.log(`${truncations} truncations; log now [${log.firstOffset}, ${log.nextOffset})`)
})
