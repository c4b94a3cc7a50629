// Guards against the pure-TypeScript engine (engine: 'js') and the native engine drifting
// apart on disk or in behaviour: a log written by either is read identically by the
// other; the same records give byte-identical segment files (created_ms aside) and index
// files; damaged logs (torn tails, incomplete batches, corrupt frames, missing or corrupt
// indexes, leftover temp files) get the same recovery report, the same cut, the same
// verify() problem and the same errors from both; bad input gets the same errors.
import fs from 'node:fs'
import path from 'node:path'
import zlib from 'node:zlib'

import test from 'ava'

import { Log } from '../dist/index.mjs'
import { FLAG_BATCH_CONTINUES, indexPathOf, patchFile, readSegmentFrames, segmentPaths } from './helpers/format.mjs'
import { tempDir } from './helpers/temp.mjs'

const SEGMENT_BYTES = 16 << 10
const OPTS = { segmentBytes: SEGMENT_BYTES, indexIntervalBytes: 512 }
const ENGINES = ['native', 'js']
const other = (e) => (e === 'js' ? 'native' : 'js')

/** The same records, batches and timestamps every time: several segment rolls. */
function writeWorkload(log) {
  const written = []
  for (let i = 0; written.length < 900; i++) {
    const size = (i * 37) % 300
    if (i % 5 === 0) {
      const batch = Array.from({ length: 1 + (i % 4) }, (_, k) => Buffer.alloc(size + k, (i + k) & 0xff))
      const first = log.appendBatch(batch, 5_000 + i)
      batch.forEach((b, k) => written.push({ offset: first + k, timestamp: 5_000 + i, value: b }))
    } else {
      const ts = i % 3 === 0 ? 7 : 9_000_000 - i // not monotonic
      const b = Buffer.alloc(size, i & 0xff)
      written.push({ offset: log.append(b, ts), timestamp: ts, value: b })
    }
  }
  return written
}

async function writeLog(dir, engine, options = OPTS) {
  const log = await Log.open(dir, { ...options, engine })
  const written = writeWorkload(log)
  await log.close()
  return written
}

function readAll(log) {
  return [...log.records()].map((r) => ({ offset: r.offset, timestamp: r.timestamp, value: Buffer.from(r.value) }))
}

/** Segment file bytes with created_ms (bytes 24..32) and the header CRC zeroed. */
function normalizedSegment(file) {
  const b = fs.readFileSync(file)
  b.fill(0, 24, 32)
  b.fill(0, 60, 64)
  return b
}

/** Every segment (normalised) and index file of `dir`, by file name. */
function logFiles(dir) {
  const out = {}
  for (const file of segmentPaths(dir)) {
    out[path.basename(file)] = normalizedSegment(file)
    const idx = indexPathOf(file)
    if (fs.existsSync(idx)) out[path.basename(idx)] = fs.readFileSync(idx)
  }
  return out
}

function copyDir(from, to) {
  fs.cpSync(from, to, { recursive: true })
  for (const lock of ['seglog.jslock']) fs.rmSync(path.join(to, lock), { force: true })
}

/** Replaces a directory prefix in every string of a report, so reports of two copies compare. */
function relative(value, dir) {
  return JSON.parse(JSON.stringify(value ?? null).split(dir).join('<dir>'))
}

/** Opens `dir` with `engine`: the log, or the error open threw, plus the recovery report. */
async function openEither(dir, engine) {
  try {
    const log = await Log.open(dir, { ...OPTS, engine })
    return { log, recovery: relative(log.recovery, dir) }
  } catch (err) {
    return { error: { code: err.code, name: err.name, message: err.message.split(dir).join('<dir>') } }
  }
}

for (const writer of ENGINES) {
  const reader = other(writer)
  test(`a log written by the ${writer} engine reads identically with the ${reader} engine`, async (t) => {
    const dir = tempDir(t)
    const written = await writeLog(dir, writer)
    const log = await Log.open(dir, { ...OPTS, engine: reader })
    t.is(log.engine, reader)
    t.is(log.stats().engine, reader)
    t.deepEqual(log.recovery, { indexesRebuilt: [], tempFilesRemoved: [] })
    t.is(log.nextOffset, written.length)
    t.true(log.segments().length > 4, 'several segment rolls')
    t.deepEqual(readAll(log), written)
    for (const i of [0, 1, 17, 400, written.length - 1]) {
      const r = log.get(i)
      t.deepEqual({ offset: r.offset, timestamp: r.timestamp, value: Buffer.from(r.value) }, written[i])
    }
    t.is(log.get(written.length), undefined)
    const batch = log.readBatch(100, { maxRecords: 50, maxBytes: 2000 })
    t.deepEqual(batch.map((r) => r.offset), written.slice(100, 100 + batch.length).map((w) => w.offset))
    t.true(batch.length >= 1 && batch.length < 50, 'maxBytes bounds the batch')
    const v = await log.verify()
    t.true(v.ok, JSON.stringify(v.problem))
    t.is(v.records, written.length)
    // It appends after the other engine's records, and the first engine reads them.
    log.append(Buffer.from('tail'), 42)
    await log.close()
    const back = await Log.open(dir, { ...OPTS, engine: writer })
    t.deepEqual(back.recovery, { indexesRebuilt: [], tempFilesRemoved: [] })
    t.is(back.nextOffset, written.length + 1)
    t.deepEqual(Buffer.from(back.get(written.length).value).toString(), 'tail')
    t.true((await back.verify()).ok)
    await back.close()
  })
}

test('both engines write byte-identical segment and index files for the same records', async (t) => {
  const dirs = { native: tempDir(t), js: tempDir(t) }
  for (const e of ENGINES) await writeLog(dirs[e], e)
  const a = logFiles(dirs.native)
  const b = logFiles(dirs.js)
  t.deepEqual(Object.keys(b), Object.keys(a))
  t.true(Object.keys(a).length > 8)
  for (const name of Object.keys(a)) t.true(a[name].equals(b[name]), `${name} differs`)
  // The JS engine's segments are preallocated to the full size with a zero tail, and
  // their headers are valid (created_ms differs; its CRC covers it).
  for (const file of segmentPaths(dirs.js)) {
    const bytes = fs.readFileSync(file)
    t.is(bytes.length, SEGMENT_BYTES)
    t.is(bytes.readUInt32LE(60), zlib.crc32(bytes.subarray(0, 60)))
  }
  // Stats and segment infos agree too (paths and creation times aside).
  const infos = {}
  for (const e of ENGINES) {
    const log = await Log.open(dirs[e], { ...OPTS, engine: e })
    infos[e] = log.segments().map(({ path: p, createdMs, ...rest }) => ({ name: path.basename(p), ...rest }))
    t.deepEqual(log.timestampBounds().min, 7)
    await log.close()
  }
  t.deepEqual(infos.js, infos.native)
})

test('both engines index large records and a batch that rolls the segment the same way', async (t) => {
  const dirs = { native: tempDir(t), js: tempDir(t) }
  const opts = { segmentBytes: 8192, indexIntervalBytes: 64 }
  for (const e of ENGINES) {
    const log = await Log.open(dirs[e], { ...opts, engine: e })
    log.append(Buffer.alloc(0), 1)
    log.append(Buffer.alloc(8192 - 64 - 28, 9), 2) // the largest record that fits: its own segment
    log.appendBatch([Buffer.alloc(3000, 1), Buffer.alloc(3000, 2)], 3)
    log.appendBatch([Buffer.alloc(3000, 3)], 4) // does not fit: rolls
    t.is(log.maxRecordBytes, 8192 - 64 - 28)
    await log.close()
  }
  const a = logFiles(dirs.native)
  const b = logFiles(dirs.js)
  t.deepEqual(Object.keys(b), Object.keys(a))
  for (const name of Object.keys(a)) t.true(a[name].equals(b[name]), `${name} differs`)
})

/**
 * Writes one log, damages it with `damage(dir)`, and opens a copy with each engine:
 * both must report the same (open error or recovery, records, verify, files).
 */
async function compareDamage(t, damage, { writer = 'native', read = true } = {}) {
  const source = tempDir(t)
  await writeLog(source, writer)
  damage(source)
  const results = {}
  for (const e of ENGINES) {
    const dir = tempDir(t)
    copyDir(source, dir)
    const r = await openEither(dir, e)
    if (r.log !== undefined) {
      const log = r.log
      r.nextOffset = log.nextOffset
      r.verify = relative(await log.verify(), dir)
      if (read) {
        try {
          r.records = readAll(log)
        } catch (err) {
          r.readError = { code: err.code, message: err.message.split(dir).join('<dir>') }
        }
      }
      await log.close()
      r.files = logFiles(dir)
      delete r.log
    }
    results[e] = r
  }
  t.deepEqual(results.js, results.native)
  return results.native
}

test('a torn tail (garbage after the last frame) is cut the same way by both engines', async (t) => {
  const r = await compareDamage(t, (dir) => {
    const last = segmentPaths(dir).at(-1)
    const { end } = readSegmentFrames(last)
    patchFile(last, end, Buffer.from([1, 2, 3, 4, 200, 0, 0, 0, 9, 9, 9]))
  })
  t.regex(r.recovery.truncation.reason, /^record checksum mismatch at offset \d+ \(byte position \d+\)$/)
  t.is(r.recovery.truncation.recordsDropped, 0)
  t.true(r.verify.ok)
})

test('a frame with a bad CRC at the tail is cut, with the frames after it counted, by both engines', async (t) => {
  const r = await compareDamage(t, (dir) => {
    const last = segmentPaths(dir).at(-1)
    const { frames } = readSegmentFrames(last)
    const victim = frames.slice(0, -2).findLast((f) => f.payload.length > 0)
    patchFile(last, victim.position + 28, Buffer.from([victim.payload[0] ^ 0xff]))
    // As after a crash: the active segment's index was never written.
    fs.rmSync(indexPathOf(last))
  })
  t.regex(r.recovery.truncation.reason, /checksum|incomplete atomic batch/)
  t.true(r.recovery.truncation.recordsDropped >= 2)
  t.true(r.verify.ok)
})

test('damage before the active segment\'s last index entry is reported, never cut, by both engines', async (t) => {
  const r = await compareDamage(t, (dir) => {
    const last = segmentPaths(dir).at(-1)
    const { frames } = readSegmentFrames(last)
    const victim = frames.find((f) => f.payload.length > 0)
    patchFile(last, victim.position + 28, Buffer.from([victim.payload[0] ^ 0xff]))
  })
  t.is(r.recovery.truncation, undefined)
  t.false(r.verify.ok)
  t.is(r.verify.problem.reason, 'record checksum mismatch')
  t.is(r.readError.code, 'ERR_SEGLOG_CORRUPT')
})

test('an incomplete atomic batch at the tail is dropped whole by both engines', async (t) => {
  const source = tempDir(t)
  const log = await Log.open(source, { ...OPTS, engine: 'native' })
  log.append(Buffer.from('x'), 1)
  log.appendBatch([Buffer.from('a'), Buffer.from('b'), Buffer.from('c')], 2)
  await log.close()
  // Zero the batch's last frame: the batch is incomplete.
  const last = segmentPaths(source).at(-1)
  const { frames } = readSegmentFrames(last)
  t.is(frames.at(-1).flags & FLAG_BATCH_CONTINUES, 0)
  t.is(frames.at(-2).flags & FLAG_BATCH_CONTINUES, FLAG_BATCH_CONTINUES)
  patchFile(last, frames.at(-1).position, Buffer.alloc(frames.at(-1).frameLen))
  const reports = {}
  for (const e of ENGINES) {
    const dir = tempDir(t)
    copyDir(source, dir)
    const opened = await Log.open(dir, { ...OPTS, engine: e })
    reports[e] = { recovery: relative(opened.recovery, dir), next: opened.nextOffset, records: readAll(opened) }
    await opened.close()
    reports[e].files = logFiles(dir)
  }
  t.deepEqual(reports.js, reports.native)
  t.regex(reports.js.recovery.truncation.reason, /^incomplete atomic batch at the tail/)
  t.is(reports.js.recovery.truncation.recordsDropped, 2)
  t.is(reports.js.next, 1)
})

test('a corrupt frame inside a sealed segment without an index fails open identically', async (t) => {
  const r = await compareDamage(t, (dir) => {
    const first = segmentPaths(dir)[0]
    fs.rmSync(indexPathOf(first))
    const { frames } = readSegmentFrames(first)
    patchFile(first, frames[5].position + 8, Buffer.from([0x77]))
  })
  t.is(r.error.code, 'ERR_SEGLOG_CORRUPT')
  t.regex(r.error.message, /00000000000000000000\.seg at offset 5 \(byte position \d+\)/)
})

test('a corrupt frame inside a sealed segment with a valid index: same verify problem and read error', async (t) => {
  const r = await compareDamage(t, (dir) => {
    const first = segmentPaths(dir)[1]
    const { frames } = readSegmentFrames(first)
    patchFile(first, frames[3].position + 30, Buffer.from([0x55, 0x55]))
  })
  t.false(r.verify.ok)
  t.is(r.verify.problem.reason, 'record checksum mismatch')
  t.is(r.readError.code, 'ERR_SEGLOG_CORRUPT')
})

test('missing and corrupt index files are rebuilt identically by both engines', async (t) => {
  const r = await compareDamage(t, (dir) => {
    const segs = segmentPaths(dir)
    fs.rmSync(indexPathOf(segs[0]))
    patchFile(indexPathOf(segs[1]), 70, Buffer.from([0xff]))
    fs.rmSync(indexPathOf(segs.at(-1)))
  })
  t.is(r.recovery.indexesRebuilt.length, 3)
  t.true(r.verify.ok)
})

test('leftover temp files and orphan indexes are removed identically', async (t) => {
  const r = await compareDamage(t, (dir) => {
    fs.writeFileSync(path.join(dir, '00000000000000099999.seg.tmp'), 'x')
    fs.writeFileSync(path.join(dir, '00000000000000088888.idx'), 'orphan')
    fs.mkdirSync(path.join(dir, 'cursors'))
    fs.writeFileSync(path.join(dir, 'cursors', 'a.cursor.tmp'), 'x')
  })
  t.is(r.recovery.tempFilesRemoved.length, 3)
})

test('a stale index entry in the active segment: both engines walk from the same place', async (t) => {
  await compareDamage(t, (dir) => {
    // The active segment's index covers a prefix only (as after a crash): drop its tail entries.
    const last = segmentPaths(dir).at(-1)
    const { frames } = readSegmentFrames(last)
    const n = frames.length
    patchFile(last, frames[n - 1].position + 4, Buffer.alloc(4)) // torn last record
  })
})

test('verify reports damage to a segment header and non-zero bytes after the data identically', async (t) => {
  // Garbage far behind the end of data of a sealed segment is found by verify only.
  const r = await compareDamage(t, (dir) => {
    const first = segmentPaths(dir)[0]
    const { end } = readSegmentFrames(first)
    patchFile(first, end + 16, Buffer.from([1]))
  })
  t.false(r.verify.ok)
  t.is(r.verify.problem.reason, 'non-zero bytes after the end of data')
  const h = await compareDamage(t, (dir) => patchFile(segmentPaths(dir)[1], 30, Buffer.from([9])))
  t.is(h.error.code, 'ERR_SEGLOG_CORRUPT')
})

test('bad input gets the same errors from both engines', async (t) => {
  const results = {}
  for (const e of ENGINES) {
    const dir = tempDir(t)
    const out = []
    const capture = async (f) => {
      try {
        await f()
        out.push('ok')
      } catch (err) {
        // The JS engine's lock error names its own lock file (seglog.jslock).
        out.push({ name: err.name, code: err.code, message: err.message.split(dir).join('<dir>').replace('seglog.jslock', 'seglog.lock') })
      }
    }
    await capture(() => Log.open(dir, { engine: e, segmentBytes: 100 }))
    await capture(() => Log.open(dir, { engine: e, segmentBytes: 8192, indexIntervalBytes: 10 }))
    await capture(() => Log.open(dir, { engine: e, segmentBytes: 8192, maxRecordBytes: 9000 }))
    const log = await Log.open(dir, { engine: e, segmentBytes: 8192, maxRecordBytes: 1000 })
    await capture(() => Log.open(dir, { engine: e }))
    await capture(() => log.append('nope'))
    await capture(() => log.append(Buffer.alloc(1001)))
    await capture(() => log.append(Buffer.alloc(1), -1))
    await capture(() => log.append(Buffer.alloc(1), 2 ** 53))
    await capture(() => log.appendBatch([Buffer.alloc(1000), Buffer.alloc(1000), Buffer.alloc(1000), Buffer.alloc(1000), Buffer.alloc(1000), Buffer.alloc(1000), Buffer.alloc(1000), Buffer.alloc(1000)]))
    await capture(() => log.appendBatch('x'))
    await capture(() => log.get(-1))
    await capture(() => log.get(1.5))
    await capture(() => log.readBatch(0, { maxRecords: 'x' }))
    out.push(log.get(0) === undefined)
    await log.close()
    await capture(() => log.append(Buffer.alloc(1)))
    await capture(() => log.get(0))
    await capture(() => log.verify())
    await capture(() => Log.open(dir, { engine: e, segmentBytes: 8192, durability: 'sometimes' }))
    results[e] = out
  }
  t.deepEqual(results.js, results.native)
})

test('unsupported features throw ERR_SEGLOG_UNSUPPORTED naming the feature and the engine', async (t) => {
  const dir = tempDir(t)
  for (const options of [{ readOnly: true }, { retentionBytes: 1 << 20 }, { retentionMs: 1000 }, { retentionRecords: 5 }, { archiveDir: path.join(dir, 'a') }, { retainForCursors: true }]) {
    const err = await t.throwsAsync(Log.open(dir, { engine: 'js', ...options }))
    t.is(err.code, 'ERR_SEGLOG_UNSUPPORTED')
    t.true(err.message.includes(Object.keys(options)[0]) && err.message.includes("engine: 'js'"), err.message)
  }
  const log = await Log.open(dir, { engine: 'js' })
  log.append(Buffer.from('a'))
  for (const [feature, f] of [
    ['truncate', () => log.truncate(0)],
    ['cursors', () => log.cursor('c')],
    ['cursors', () => log.cursors()],
  ]) {
    const err = await t.throwsAsync(async () => f())
    t.is(err.code, 'ERR_SEGLOG_UNSUPPORTED')
    t.true(err.message.includes(feature) && err.message.includes("engine: 'js'"), err.message)
  }
  // Still usable afterwards.
  t.is(log.append(Buffer.from('b')), 1)
  await log.close()
  await t.throwsAsync(Log.open(dir, { engine: 'fast' }), { code: 'ERR_SEGLOG_INVALID_ARGUMENT', instanceOf: RangeError })
  await t.throwsAsync(Log.open(dir, { engine: 1 }), { code: 'ERR_INVALID_ARG_TYPE', instanceOf: TypeError })
})

test('the JS engine supports offsetForTimestamp, deleteBefore and tail like the native engine', async (t) => {
  const results = {}
  for (const e of ENGINES) {
    const dir = tempDir(t)
    const log = await Log.open(dir, { ...OPTS, engine: e })
    writeWorkload(log)
    const out = {}
    out.ts = [0, 7, 8, 5_100, 8_999_000, 9_000_000].map((ts) => log.offsetForTimestamp(ts))
    out.removed = relative((await log.deleteBefore(300)).map(({ path: p, ...r }) => ({ name: path.basename(p), ...r })), dir)
    out.first = log.firstOffset
    out.below = await t.throwsAsync(async () => log.get(0))
    out.below = { code: out.below.code, message: out.below.message }
    out.verify = relative(await log.verify(), dir)
    const ac = new AbortController()
    const seen = []
    const tail = log.tail({ from: log.nextOffset - 2, signal: ac.signal })
    setTimeout(() => log.append(Buffer.from('live'), 1), 5)
    for await (const r of tail) {
      seen.push([r.offset, Buffer.from(r.value).toString()])
      if (seen.length === 3) ac.abort()
    }
    out.seen = seen.map(([o]) => o)
    out.last = seen[2][1]
    await log.close()
    results[e] = out
  }
  t.deepEqual(results.js, results.native)
  t.true(results.js.removed.length > 0)
})

test('JS engine: durable appends, sync and close survive a reopen; the lock excludes a second writer', async (t) => {
  const dir = tempDir(t)
  const log = await Log.open(dir, { engine: 'js', durability: 'sync', ...OPTS })
  const offsets = await Promise.all(Array.from({ length: 50 }, (_, i) => log.appendDurable(Buffer.from(`d${i}`))))
  t.deepEqual(offsets, Array.from({ length: 50 }, (_, i) => i))
  t.true(log.durableOffset >= 50)
  t.true(log.stats().durability.syncs >= 1)
  await t.throwsAsync(Log.open(dir, { engine: 'js' }), { code: 'ERR_SEGLOG_LOCKED' })
  log.append(Buffer.from('last'))
  await log.sync()
  await log.close()
  const n = await Log.open(dir, { ...OPTS })
  t.is(n.nextOffset, 51)
  // The JS engine detects a native writer holding the flock (Linux /proc/locks).
  await t.throwsAsync(Log.open(dir, { engine: 'js' }), { code: 'ERR_SEGLOG_LOCKED' })
  await n.close()
})
