// Guards against recovery that loses good records, keeps bad ones, or hides damage: a
// torn or garbage tail of the last segment is cut back to the valid prefix and reported
// in `log.recovery.truncation` (a torn atomic batch is cut whole), damage in a sealed
// segment or a gap between segments is ERR_SEGLOG_CORRUPT naming the file, and missing,
// damaged or lying index files are rebuilt from the log. Files are damaged with an
// independent reader of docs/FORMAT.md (helpers/format.mjs).
import fs from 'node:fs'
import path from 'node:path'

import test from 'ava'

import { Log } from '../dist/index.mjs'
import {
  FLAG_BATCH_CONTINUES,
  INDEX_HEADER_LEN,
  decodeIndex,
  indexPathOf,
  patchFile,
  readSegmentFrames,
  segmentPaths,
} from './helpers/format.mjs'
import { openLog, tempDir } from './helpers/temp.mjs'

const SEGMENT_BYTES = 64 << 10
const OPTIONS = { segmentBytes: SEGMENT_BYTES }

/** A payload with no zero byte, so the last non-zero byte of a frame is its last byte. */
function valueFor(offset) {
  const b = Buffer.alloc(40 + ((offset * 37) % 200))
  for (let i = 0; i < b.length; i++) b[i] = 1 + ((offset + i) % 250)
  return b
}

/**
 * Writes `count` records (single appends, timestamp 1000 + offset), then optionally one
 * atomic batch of `batch` records (timestamp 5000), and closes. Returns the record count.
 */
async function writeLog(dir, { count = 1000, batch = 0 } = {}) {
  const log = await Log.open(dir, OPTIONS)
  for (let o = 0; o < count; o++) log.append(valueFor(o), 1000 + o)
  if (batch > 0) log.appendBatch(Array.from({ length: batch }, (_, i) => valueFor(count + i)), 5000)
  const n = log.nextOffset
  await log.close()
  return n
}

/** Checks that the log holds exactly records 0..n-1 as written, through get and records(). */
async function checkPrefix(t, log, n, where) {
  t.is(log.nextOffset, n, `${where}: nextOffset`)
  let i = 0
  for (const r of log.records()) {
    if (r.offset !== i || Buffer.compare(Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength), valueFor(i)) !== 0) {
      t.fail(`${where}: record ${i} differs`)
      return
    }
    i++
  }
  t.is(i, n, `${where}: records() count`)
  for (const o of [0, Math.floor(n / 2), n - 1]) if (o >= 0 && o < n) t.deepEqual(log.get(o).value, valueFor(o), `${where}: get(${o})`)
  t.is(log.get(n), undefined)
  const report = await log.verify()
  t.true(report.ok, `${where}: verify ${JSON.stringify(report.problem)}`)
  t.is(report.records, n)
}

/** Every byte from the end of data to the end of the file is zero (FORMAT.md 6, step 5). */
function tailIsZero(segmentPath) {
  const bytes = fs.readFileSync(segmentPath)
  const { end } = readSegmentFrames(segmentPath)
  return bytes.subarray(end).every((b) => b === 0)
}

test('zeroed last 10 bytes of the last record: reopen cuts exactly that record and reports it', async (t) => {
  const dir = tempDir(t)
  const n = await writeLog(dir)
  const segments = segmentPaths(dir)
  t.true(segments.length > 1, 'the log has several segments')
  const last = segments.at(-1)
  const frame = readSegmentFrames(last).frames.at(-1)
  t.is(frame.offset, n - 1)
  patchFile(last, frame.position + frame.frameLen - 10, Buffer.alloc(10))

  const log = await openLog(t, dir, OPTIONS)
  const cut = log.recovery.truncation
  t.truthy(cut, 'a truncation is reported')
  t.is(cut.firstDroppedOffset, n - 1)
  t.is(cut.position, frame.position)
  t.is(cut.segment, last)
  t.regex(cut.reason, /checksum|crc/i)
  t.is(cut.recordsDropped, 0, 'the torn frame is not well-formed')
  t.is(cut.bytesDropped, frame.frameLen - 10, 'from the cut to the last non-zero byte')
  await checkPrefix(t, log, n - 1, 'after the cut')
  t.true(tailIsZero(last), 'the tail after the cut is zeroed')

  t.is(log.append(valueFor(n - 1), 1000 + n - 1), n - 1, 'the cut offset is reused by the next append')
  await log.close()
  const again = await openLog(t, dir, OPTIONS)
  t.is(again.recovery.truncation, undefined)
  await checkPrefix(t, again, n, 'after appending the record again and reopening')
})

test('a torn write of the last record at every byte: recovery always keeps exactly the earlier records', async (t) => {
  const pristine = tempDir(t)
  const n = await writeLog(pristine, { count: 120 })
  const [segment] = segmentPaths(pristine)
  t.is(segmentPaths(pristine).length, 1)
  const original = fs.readFileSync(segment)
  const frame = readSegmentFrames(segment).frames.at(-1)
  const dir = tempDir(t)
  const copy = path.join(dir, path.basename(segment))
  let reported = 0
  // Only the first k bytes of the last frame reached the file; the rest are zeros.
  for (let k = 0; k < frame.frameLen; k++) {
    const torn = Buffer.from(original)
    torn.fill(0, frame.position + k, frame.position + frame.frameLen)
    fs.writeFileSync(copy, torn)
    fs.copyFileSync(indexPathOf(segment), indexPathOf(copy))
    const log = await Log.open(dir, OPTIONS)
    try {
      const cut = log.recovery.truncation
      if (cut) {
        reported++
        t.is(cut.firstDroppedOffset, n - 1, `k=${k}: first dropped offset`)
        t.is(cut.position, frame.position, `k=${k}: cut position`)
      }
      t.is(log.nextOffset, n - 1, `k=${k}: the torn record is gone`)
      t.deepEqual(log.get(n - 2).value, valueFor(n - 2), `k=${k}: the record before it is intact`)
      const report = await log.verify()
      t.true(report.ok, `k=${k}: verify ${JSON.stringify(report.problem)}`)
    } finally {
      await log.close()
    }
    t.true(tailIsZero(copy), `k=${k}: tail zeroed`)
  }
  // Once the length field is whole (k >= 8) the frame is torn, not absent, and reported.
  t.true(reported >= frame.frameLen - 8, `${reported} of ${frame.frameLen} torn writes reported`)
})

test('a torn atomic batch at the tail is cut whole, back to its first record', async (t) => {
  const dir = tempDir(t)
  const n = await writeLog(dir, { count: 500, batch: 5 })
  const last = segmentPaths(dir).at(-1)
  const frames = readSegmentFrames(last).frames
  const batch = frames.slice(-5)
  t.deepEqual(
    batch.map((f) => [f.offset, f.flags & FLAG_BATCH_CONTINUES]),
    [
      [n - 5, 1],
      [n - 4, 1],
      [n - 3, 1],
      [n - 2, 1],
      [n - 1, 0],
    ],
    'BATCH_CONTINUES on every record of the batch but the last (FORMAT.md 2.2)',
  )
  const lastOfBatch = batch.at(-1)
  patchFile(last, lastOfBatch.position + lastOfBatch.frameLen - 1, Buffer.from([0]))

  const log = await openLog(t, dir, OPTIONS)
  const cut = log.recovery.truncation
  t.truthy(cut)
  t.is(cut.firstDroppedOffset, n - 5, 'the whole batch is dropped')
  t.is(cut.position, batch[0].position)
  t.is(cut.recordsDropped, 4, 'the four well-formed records of the batch')
  t.true(cut.reason.length > 0)
  await checkPrefix(t, log, n - 5, 'after cutting the batch')
})

test('a batch whose last record never reached the file is cut whole', async (t) => {
  const dir = tempDir(t)
  const n = await writeLog(dir, { count: 300, batch: 3 })
  const last = segmentPaths(dir).at(-1)
  const lastFrame = readSegmentFrames(last).frames.at(-1)
  patchFile(last, lastFrame.position, Buffer.alloc(lastFrame.frameLen))

  const log = await openLog(t, dir, OPTIONS)
  t.like(log.recovery.truncation, { firstDroppedOffset: n - 3, recordsDropped: 2 })
  t.regex(log.recovery.truncation.reason, /batch/i)
  await checkPrefix(t, log, n - 3, 'after cutting the incomplete batch')
})

test('garbage after the end of data is cut and reported; every record stays', async (t) => {
  const dir = tempDir(t)
  const n = await writeLog(dir, { count: 700 })
  const last = segmentPaths(dir).at(-1)
  const { end } = readSegmentFrames(last)
  const garbage = Buffer.alloc(300)
  for (let i = 0; i < garbage.length; i++) garbage[i] = 1 + ((i * 89) % 255)
  patchFile(last, end, garbage)

  const log = await openLog(t, dir, OPTIONS)
  t.like(log.recovery.truncation, { firstDroppedOffset: n, position: end, bytesDropped: 300, segment: last })
  await checkPrefix(t, log, n, 'after cutting garbage')
  t.true(tailIsZero(last))
})

test('a stale well-formed frame after the end of data (an earlier life of the file) is not resurrected', async (t) => {
  const dir = tempDir(t)
  const n = await writeLog(dir, { count: 400 })
  const last = segmentPaths(dir).at(-1)
  const bytes = fs.readFileSync(last)
  const { frames, end } = readSegmentFrames(last)
  // Copy the last valid frame (offset n-1) to the end of data: valid CRC, wrong offset.
  const f = frames.at(-1)
  patchFile(last, end, bytes.subarray(f.position, f.position + f.frameLen))

  const log = await openLog(t, dir, OPTIONS)
  t.like(log.recovery.truncation, { firstDroppedOffset: n, position: end, recordsDropped: 1 })
  await checkPrefix(t, log, n, 'after dropping the stale frame')
})

test('a flipped byte in a sealed segment: Log.open rejects with ERR_SEGLOG_CORRUPT naming the segment', async (t) => {
  const dir = tempDir(t)
  await writeLog(dir)
  const sealed = segmentPaths(dir)[0]
  const lastOfSealed = readSegmentFrames(sealed).frames.at(-1)
  const at = lastOfSealed.position + 28 + 5
  const before = fs.readFileSync(sealed)
  patchFile(sealed, at, Buffer.from([before[at] ^ 0x10]))

  const err = await t.throwsAsync(() => Log.open(dir, OPTIONS), { code: 'ERR_SEGLOG_CORRUPT' })
  t.true(err.message.includes(sealed), `message names the segment: ${err.message}`)
  t.true(err.message.includes(String(lastOfSealed.offset)), `message names the offset: ${err.message}`)
  t.deepEqual(fs.readFileSync(sealed).subarray(0, at), before.subarray(0, at), 'the sealed segment is not repaired or truncated')
  t.is(fs.statSync(sealed).size, SEGMENT_BYTES)
  // The failed open released the lock: it fails again the same way, not with ERR_SEGLOG_LOCKED.
  await t.throwsAsync(() => Log.open(dir, OPTIONS), { code: 'ERR_SEGLOG_CORRUPT' })
})

test('a flipped byte mid-way in a sealed segment: found by a full scan at open (no index), by get and by verify', async (t) => {
  const dir = tempDir(t)
  const n = await writeLog(dir)
  const sealed = segmentPaths(dir)[0]
  const victim = readSegmentFrames(sealed).frames[60]
  const at = victim.position + 28 + 3
  const original = fs.readFileSync(sealed)[at]
  patchFile(sealed, at, Buffer.from([original ^ 0x01]))

  // With its index intact the segment is trusted at open, but the damage is reported, never skipped.
  const log = await Log.open(dir, OPTIONS)
  try {
    t.deepEqual(log.get(59).value, valueFor(59), 'records before the damage read fine')
    const err = t.throws(() => log.get(60), { code: 'ERR_SEGLOG_CORRUPT' })
    t.true(err.message.includes(sealed), err.message)
    t.throws(() => [...log.records()], { code: 'ERR_SEGLOG_CORRUPT' }, 'iteration stops at the damage')
    t.deepEqual(log.get(n - 1).value, valueFor(n - 1), 'other segments read fine')
    const report = await log.verify()
    t.false(report.ok)
    t.like(report.problem, { segment: sealed, offset: 60, position: victim.position })
  } finally {
    await log.close()
  }

  // Without its index the sealed segment is scanned in full, and open fails.
  fs.rmSync(indexPathOf(sealed))
  const err = await t.throwsAsync(() => Log.open(dir, OPTIONS), { code: 'ERR_SEGLOG_CORRUPT' })
  t.true(err.message.includes(sealed), err.message)
})

test('a damaged segment header, a truncated segment file or a missing segment: ERR_SEGLOG_CORRUPT naming the file', async (t) => {
  const cases = [
    ['sealed header byte flipped', (segs) => (patchFile(segs[1], 20, Buffer.from([0x7f])), segs[1])],
    ['active header byte flipped', (segs) => (patchFile(segs.at(-1), 3, Buffer.from([0x00])), segs.at(-1))],
    ['active segment file truncated', (segs) => (fs.truncateSync(segs.at(-1), SEGMENT_BYTES - 4096), segs.at(-1))],
    ['middle segment deleted', (segs) => (fs.rmSync(segs[1]), segs[2])],
  ]
  for (const [what, damage] of cases) {
    const dir = tempDir(t)
    await writeLog(dir)
    const named = damage(segmentPaths(dir))
    const err = await t.throwsAsync(() => Log.open(dir, OPTIONS), { code: 'ERR_SEGLOG_CORRUPT' }, what)
    t.true(err?.message.includes(named), `${what}: ${err?.message}`)
  }
})

test('all .idx files deleted: reopen rebuilds every index, reads right, verify ok', async (t) => {
  const dir = tempDir(t)
  const n = await writeLog(dir)
  const segments = segmentPaths(dir)
  for (const s of segments) fs.rmSync(indexPathOf(s))

  let log = await Log.open(dir, OPTIONS)
  t.deepEqual([...log.recovery.indexesRebuilt].sort(), segments.map(indexPathOf), 'every index is reported rebuilt')
  t.is(log.recovery.truncation, undefined)
  await checkPrefix(t, log, n, 'with rebuilt indexes')
  t.deepEqual(
    log.segments().map((s) => [s.baseOffset, s.nextOffset, s.minTimestamp, s.maxTimestamp]),
    segments.map((_, i) => {
      const s = log.segments()[i]
      return [s.baseOffset, s.nextOffset, 1000 + s.baseOffset, 1000 + s.nextOffset - 1]
    }),
    'timestamps recovered from the records',
  )
  await log.close()

  for (const s of segments) {
    const idx = decodeIndex(fs.readFileSync(indexPathOf(s)))
    t.true(idx.magicOk && idx.headerCrcOk && idx.entriesCrcOk && idx.lengthOk, `${path.basename(s)}: the index is written again, valid`)
  }
  log = await openLog(t, dir, OPTIONS)
  t.deepEqual(log.recovery.indexesRebuilt, [], 'the rewritten indexes are trusted on the next open')
  await checkPrefix(t, log, n, 'after the next reopen')
})

test('damaged or lying index files are rebuilt or bypassed: reads stay right', async (t) => {
  const dir = tempDir(t)
  const n = await writeLog(dir)
  const segments = segmentPaths(dir)
  // Segment 0: random bytes. Segment 1: cut short. Last segment: bad entries CRC.
  fs.writeFileSync(indexPathOf(segments[0]), Buffer.alloc(200, 0x5a))
  const idx1 = fs.readFileSync(indexPathOf(segments[1]))
  fs.writeFileSync(indexPathOf(segments[1]), idx1.subarray(0, idx1.length - 3))
  const lastIdx = indexPathOf(segments.at(-1))
  patchFile(lastIdx, INDEX_HEADER_LEN + 4, Buffer.from([0xff, 0xff]))

  const log = await openLog(t, dir, OPTIONS)
  for (const p of [segments[0], segments[1], segments.at(-1)].map(indexPathOf)) {
    t.true(log.recovery.indexesRebuilt.includes(p), `${path.basename(p)} reported rebuilt`)
  }
  await checkPrefix(t, log, n, 'with rebuilt indexes')
})

test('an index entry that points at the wrong record (valid CRCs) does not misdirect reads', async (t) => {
  const dir = tempDir(t)
  const n = await writeLog(dir)
  const segments = segmentPaths(dir)
  const sealed = segments[0]
  const frames = readSegmentFrames(sealed).frames
  const idxPath = indexPathOf(sealed)
  const buf = fs.readFileSync(idxPath)
  const idx = decodeIndex(buf)
  t.true(idx.entries.length >= 3)
  // Move entry 1 to the frame after the one it names: still sorted, inside the data,
  // with valid checksums, but the frame there has a different offset.
  const e = idx.entries[1]
  const i = frames.findIndex((f) => f.position === e.position)
  buf.writeUInt32LE(frames[i + 1].position, INDEX_HEADER_LEN + 16 + 4)
  const zlib = await import('node:zlib')
  const entryBytes = buf.subarray(INDEX_HEADER_LEN)
  buf.writeUInt32LE(zlib.crc32(entryBytes), 56)
  buf.writeUInt32LE(zlib.crc32(buf.subarray(0, 60)), 60)
  fs.writeFileSync(idxPath, buf)
  t.true(decodeIndex(buf).entriesCrcOk && decodeIndex(buf).headerCrcOk)

  const log = await openLog(t, dir, OPTIONS)
  for (let o = 0; o < frames.length + 5; o++) t.deepEqual(log.get(o).value, valueFor(o), `get(${o})`)
  await checkPrefix(t, log, n, 'after reads through a lying index')
})

test('leftover .tmp files are removed on open and reported', async (t) => {
  const dir = tempDir(t)
  const n = await writeLog(dir, { count: 50 })
  const tmps = ['00000000000000000050.seg.tmp', '00000000000000000000.idx.tmp'].map((f) => path.join(dir, f))
  for (const f of tmps) fs.writeFileSync(f, Buffer.alloc(100, 1))
  const other = path.join(dir, 'notes.txt')
  fs.writeFileSync(other, 'not a log file')

  const log = await openLog(t, dir, OPTIONS)
  t.deepEqual([...log.recovery.tempFilesRemoved].sort(), tmps.sort())
  for (const f of tmps) t.false(fs.existsSync(f))
  t.is(fs.readFileSync(other, 'utf8'), 'not a log file', 'other files are ignored')
  await checkPrefix(t, log, n, 'after removing temp files')
})

test('non-monotonic timestamps: the running-max time index survives reopen exactly (verify ok)', async (t) => {
  // Every record at an index entry has timestamp 0 while records between entries keep
  // raising the running maximum, so recovery that seeds the maximum from the wrong entry
  // rebuilds entries that disagree with the records.
  const dir = tempDir(t)
  const payload = Buffer.alloc(36, 7) // 28 + 36 = 64-byte frames: an entry every 64 records
  let log = await Log.open(dir, { ...OPTIONS, indexIntervalBytes: 4096 })
  for (let o = 0; o < 900; o++) log.append(payload, o % 2 === 1 ? 10_000 + o : 0)
  const before = log.segments()
  t.true((await log.verify()).ok, 'verify ok before closing')
  await log.close()

  log = await openLog(t, dir, { ...OPTIONS, indexIntervalBytes: 4096 })
  const report = await log.verify()
  t.true(report.ok, `verify after reopen: ${JSON.stringify(report.problem)}`)
  t.deepEqual(log.segments(), before)
  t.is(log.get(899).timestamp, 10_899)
  t.is(log.get(64).timestamp, 0)
})
