// Guards against the engine and docs/FORMAT.md drifting apart: the files a log writes are
// read back with an independent reader written from FORMAT.md alone (helpers/format.mjs),
// and every header field, frame, checksum, flag, padding byte and index entry must be as
// the document says.
import fs from 'node:fs'
import path from 'node:path'

import test from 'ava'

import { Log } from '../dist/index.mjs'
import {
  FLAG_BATCH_CONTINUES,
  SEGMENT_HEADER_LEN,
  align8,
  decodeIndex,
  decodeSegmentHeader,
  indexPathOf,
  readSegmentFrames,
  segmentPaths,
} from './helpers/format.mjs'
import { tempDir } from './helpers/temp.mjs'

const SEGMENT_BYTES = 64 << 10
const INDEX_INTERVAL_BYTES = 1024

test('segment and index files match FORMAT.md byte for byte', async (t) => {
  const dir = tempDir(t)
  const log = await Log.open(dir, { segmentBytes: SEGMENT_BYTES, indexIntervalBytes: INDEX_INTERVAL_BYTES })
  const written = [] // [payload, timestamp, continues]
  for (let i = 0; written.length < 1500; i++) {
    const size = (i * 53) % 700
    if (i % 4 === 0) {
      const batch = Array.from({ length: 1 + (i % 6) }, (_, k) => Buffer.alloc(size + k, (i + k) & 0xff))
      log.appendBatch(batch, 7_000 + i)
      batch.forEach((b, k) => written.push([b, 7_000 + i, k < batch.length - 1]))
    } else {
      const ts = i % 3 === 0 ? 1 : 9_000_000 - i // not monotonic
      const b = Buffer.alloc(size, i & 0xff)
      log.append(b, ts)
      written.push([b, ts, false])
    }
  }
  const infos = log.segments()
  await log.close()

  const files = segmentPaths(dir)
  t.true(files.length > 5)
  t.deepEqual(files, infos.map((s) => s.path))
  t.true(fs.existsSync(path.join(dir, 'seglog.lock')), 'seglog.lock exists (FORMAT.md 1)')
  let offset = 0
  for (const [i, file] of files.entries()) {
    const bytes = fs.readFileSync(file)
    const name = path.basename(file)
    t.is(bytes.length, SEGMENT_BYTES, `${name}: preallocated to segmentBytes`)
    const header = decodeSegmentHeader(bytes)
    t.like(
      header,
      { magicOk: true, version: 1, flags: 0, baseOffset: offset, segmentBytes: SEGMENT_BYTES, reservedZero: true, crcOk: true },
      `${name}: segment header (FORMAT.md 2.1)`,
    )
    t.is(name, `${String(offset).padStart(20, '0')}.seg`, 'named by its base offset')
    t.is(header.createdMs, infos[i].createdMs)

    const { frames, end, stop } = readSegmentFrames(file)
    t.is(stop, 'zero length', `${name}: data ends at a zero frame_len`)
    t.is(end, infos[i].dataBytes)
    t.true(bytes.subarray(end).every((b) => b === 0), `${name}: zeros after the end of data`)
    let position = SEGMENT_HEADER_LEN
    let runningMax = 0
    const maxAt = new Map()
    for (const f of frames) {
      const [payload, timestamp, continues] = written[offset]
      t.is(f.position, position, 'frames are back to back, 8-byte aligned')
      t.is(f.offset, offset, 'each frame carries its absolute offset')
      t.is(f.timestamp, timestamp)
      t.is(f.flags, continues ? FLAG_BATCH_CONTINUES : 0, `offset ${offset}: BATCH_CONTINUES flag`)
      t.true(f.payload.equals(payload), `offset ${offset}: payload`)
      t.true(bytes.subarray(f.position + f.frameLen, align8(f.position + f.frameLen)).every((b) => b === 0), 'padding is zero')
      runningMax = Math.max(runningMax, f.timestamp)
      maxAt.set(f.position, { offset: f.offset, runningMax })
      position = align8(f.position + f.frameLen)
      offset++
    }
    t.is(offset, infos[i].nextOffset)

    const idx = decodeIndex(fs.readFileSync(indexPathOf(file)))
    t.like(
      idx,
      { magicOk: true, version: 1, headerCrcOk: true, entriesCrcOk: true, lengthOk: true, baseOffset: header.baseOffset, nextOffset: offset, endPosition: end },
      `${name}: index header (FORMAT.md 4.1)`,
    )
    // Entries: the first record, then the first record at least the interval past the previous entry.
    const want = []
    let last
    for (const f of frames) {
      if (last === undefined || f.position - last >= INDEX_INTERVAL_BYTES) {
        want.push({ relativeOffset: f.offset - header.baseOffset, position: f.position, maxTimestamp: maxAt.get(f.position).runningMax })
        last = f.position
      }
    }
    t.deepEqual(idx.entries, want, `${name}: index entries (FORMAT.md 4.2)`)
  }
  t.is(offset, written.length)
})
