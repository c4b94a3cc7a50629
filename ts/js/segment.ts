// One segment file of the pure-TypeScript engine: its file descriptor, extent, sparse
// index and frame walks. Mirrors crates/seglog-core/src/segment.rs; FORMAT.md is the spec.
import * as fs from 'node:fs'

import {
  BAD_LENGTH,
  FRAME_END,
  FRAME_HEADER_LEN,
  FLAG_BATCH_CONTINUES,
  F_FLAGS,
  F_LEN,
  F_OFFSET,
  F_TIMESTAMP,
  NO_MIN_TIMESTAMP,
  SEGMENT_HEADER_LEN,
  align8,
  checkFrame,
  decodeIndex,
  decodeSegmentHeader,
  describeProblem,
  encodeIndex,
  encodeSegmentHeader,
  maxPayloadForSegment,
  u32,
  u64,
  type IndexFile,
} from './format'
import { corrupt, fsyncDir, io, ioError, joinPath, readAt, writeAll, writeFileAtomic } from './files'

export const SEGMENT_SUFFIX = '.seg'
export const INDEX_SUFFIX = '.idx'

export function segmentFileName(baseOffset: number): string {
  return `${String(baseOffset).padStart(20, '0')}${SEGMENT_SUFFIX}`
}

/** Parses `<20 digits>.seg`; undefined otherwise (or beyond 2^53-1, which no log reaches). */
export function parseSegmentFileName(name: string): number | undefined {
  if (!/^\d{20}\.seg$/.test(name)) return undefined
  const n = Number(name.slice(0, 20))
  return Number.isSafeInteger(n) ? n : undefined
}

/** A growable sparse index: entries strictly increasing in relative offset and position. */
export class Entries {
  relative: Uint32Array
  position: Uint32Array
  maxTs: Float64Array
  count = 0

  constructor(capacity = 16) {
    this.relative = new Uint32Array(capacity)
    this.position = new Uint32Array(capacity)
    this.maxTs = new Float64Array(capacity)
  }

  static from(idx: IndexFile): Entries {
    const e = new Entries(0)
    e.relative = idx.relative
    e.position = idx.position
    e.maxTs = idx.maxTs
    e.count = idx.count
    return e
  }

  /** A copy of the first `n` entries. */
  prefix(n: number): Entries {
    const e = new Entries(Math.max(16, n * 2))
    e.relative.set(this.relative.subarray(0, n))
    e.position.set(this.position.subarray(0, n))
    e.maxTs.set(this.maxTs.subarray(0, n))
    e.count = n
    return e
  }

  push(relative: number, position: number, maxTs: number): void {
    if (this.count === this.relative.length) this.#grow()
    this.relative[this.count] = relative
    this.position[this.count] = position
    this.maxTs[this.count] = maxTs
    this.count++
  }

  #grow(): void {
    const n = Math.max(16, this.count * 2)
    const r = new Uint32Array(n)
    const p = new Uint32Array(n)
    const t = new Float64Array(n)
    r.set(this.relative)
    p.set(this.position)
    t.set(this.maxTs)
    this.relative = r
    this.position = p
    this.maxTs = t
  }

  /** Number of entries with `relative <= rel` (partition point). */
  countAtOrBelow(rel: number): number {
    let lo = 0
    let hi = this.count
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.relative[mid] <= rel) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  /** Number of entries with `maxTs < ts` (partition point). */
  countMaxTsBelow(ts: number): number {
    let lo = 0
    let hi = this.count
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.maxTs[mid] < ts) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}

/** A window of a segment file's bytes, read with one `pread` at a time. */
export class Window {
  buf: Buffer
  seg: Segment | undefined
  /** File position of `buf[0]` and how many bytes of it are valid. */
  start = 0
  len = 0

  constructor(bytes: number) {
    this.buf = Buffer.allocUnsafeSlow(bytes)
  }

  has(seg: Segment, pos: number, n: number): boolean {
    return this.seg === seg && pos >= this.start && pos + n <= this.start + this.len
  }

  /**
   * Reads `[pos, pos + max(need, chunk))` of `seg` (capped at `limit`, at most the file
   * size). Afterwards `has(seg, pos, n)` holds for every `n <= need` within `limit`.
   */
  load(seg: Segment, pos: number, need: number, chunk: number, limit: number): void {
    let want = Math.min(Math.max(need, chunk), limit - pos)
    if (want < 0) want = 0
    if (this.buf.length < want) this.buf = Buffer.allocUnsafeSlow(Math.max(want, this.buf.length * 2))
    this.seg = undefined
    const got = io('read segment', seg.path, () => readAt(seg.fd, this.buf, 0, want, pos))
    this.seg = seg
    this.start = pos
    this.len = got
  }

  forget(): void {
    this.seg = undefined
    this.len = 0
  }
}

/** Where a walk over frames stopped: the end of data, or a bad frame (a problem < 0). */
export interface WalkStop {
  problem: number
  position: number
  offset: number
}

/** The state of a walk: where the next frame is and what has been seen (segment.rs `Walk`). */
export class Walk {
  position: number
  nextOffset: number
  minTs: number
  maxTs: number
  entries: Entries
  lastEntryPosition: number
  lastFrame: number
  /** The state before the first record of an open atomic batch, if inside one. */
  batchStart: { position: number; nextOffset: number; minTs: number; maxTs: number; entries: number; lastEntryPosition: number; lastFrame: number } | undefined

  constructor(position: number, nextOffset: number, maxTs: number, entries: Entries, lastEntryPosition: number) {
    this.position = position
    this.nextOffset = nextOffset
    this.minTs = NO_MIN_TIMESTAMP
    this.maxTs = maxTs
    this.entries = entries
    this.lastEntryPosition = lastEntryPosition
    this.lastFrame = -1
    this.batchStart = undefined
  }

  static fromStart(baseOffset: number): Walk {
    return new Walk(SEGMENT_HEADER_LEN, baseOffset, 0, new Entries(), -1)
  }

  /** Starts at entry `i` (whose frame the caller checks), keeping the entries before it. */
  static fromEntry(baseOffset: number, e: Entries, i: number): Walk {
    // The entry holds the running maximum up to its own record, which the walk visits again.
    return new Walk(e.position[i], baseOffset + e.relative[i], e.maxTs[i], e.prefix(i), i === 0 ? -1 : e.position[i - 1])
  }

  /** Cuts back to the start of the open batch, if any. Returns true if it did. */
  cutOpenBatch(): boolean {
    const m = this.batchStart
    if (m === undefined) return false
    this.batchStart = undefined
    this.position = m.position
    this.nextOffset = m.nextOffset
    this.minTs = m.minTs
    this.maxTs = m.maxTs
    this.entries.count = m.entries
    this.lastEntryPosition = m.lastEntryPosition
    this.lastFrame = m.lastFrame
    return true
  }

  /** Notes a valid record (`flags`, `timestamp`, `len`) at `position` and moves past it. */
  advance(baseOffset: number, len: number, timestamp: number, flags: number, indexInterval: number): void {
    if ((flags & FLAG_BATCH_CONTINUES) !== 0) {
      if (this.batchStart === undefined) {
        this.batchStart = {
          position: this.position,
          nextOffset: this.nextOffset,
          minTs: this.minTs,
          maxTs: this.maxTs,
          entries: this.entries.count,
          lastEntryPosition: this.lastEntryPosition,
          lastFrame: this.lastFrame,
        }
      }
    } else {
      this.batchStart = undefined
    }
    if (timestamp < this.minTs) this.minTs = timestamp
    if (timestamp > this.maxTs) this.maxTs = timestamp
    if (this.lastEntryPosition < 0 || this.position - this.lastEntryPosition >= indexInterval) {
      this.entries.push(this.nextOffset - baseOffset, this.position, this.maxTs)
      this.lastEntryPosition = this.position
    }
    this.lastFrame = this.position
    this.position = align8(this.position + len)
    this.nextOffset++
  }
}

/** Bytes read per `pread` when walking a whole segment (recovery, verify, rebuilds). */
export const SCAN_CHUNK_BYTES = 1 << 20

export class Segment {
  readonly path: string
  readonly indexPath: string
  readonly baseOffset: number
  readonly createdMs: number
  /** File size: the preallocated `segmentBytes`. */
  readonly size: number
  readonly maxPayload: number
  fd: number
  nextOffset: number
  /** Position after the last frame (8-byte aligned): where the next frame goes. */
  end = SEGMENT_HEADER_LEN
  minTs = NO_MIN_TIMESTAMP
  maxTs = 0
  index = new Entries()
  lastEntryPosition = -1

  private constructor(path: string, fd: number, baseOffset: number, createdMs: number, size: number) {
    this.path = path
    this.indexPath = path.slice(0, -SEGMENT_SUFFIX.length) + INDEX_SUFFIX
    this.fd = fd
    this.baseOffset = baseOffset
    this.nextOffset = baseOffset
    this.createdMs = createdMs
    this.size = size
    this.maxPayload = maxPayloadForSegment(size)
  }

  /**
   * Creates a segment durably (FORMAT.md 7): temp file, sized, header, fsync, rename,
   * fsync the directory. Node has no `posix_fallocate`: the file is sized with
   * `ftruncate`, which reads as zeros (the tail FORMAT.md 2 asks for) but leaves its
   * blocks unallocated, so a full disk surfaces as `ERR_SEGLOG_NO_SPACE` when appended
   * data is written (and poisons the log), not when the segment is created.
   */
  static create(dir: string, baseOffset: number, segmentBytes: number, createdMs: number): Segment {
    const path = joinPath(dir, segmentFileName(baseOffset))
    const tmp = `${path}.tmp`
    const fd = io('create segment', tmp, () => fs.openSync(tmp, 'w+'))
    try {
      io('preallocate segment', tmp, () => {
        fs.ftruncateSync(fd, segmentBytes)
        const header = encodeSegmentHeader({ baseOffset, createdMs, segmentBytes })
        writeAll(fd, header, 0, header.length, 0)
        fs.fsyncSync(fd)
      })
      io('rename segment', path, () => fs.renameSync(tmp, path))
    } catch (err) {
      fs.closeSync(fd)
      try {
        fs.unlinkSync(tmp)
      } catch {
        // Renamed already, or never created.
      }
      throw err
    }
    io('fsync directory', dir, () => fsyncDir(dir))
    return new Segment(path, fd, baseOffset, createdMs, segmentBytes)
  }

  /** Opens an existing segment and checks its header (segment.rs `Segment::open`). */
  static open(path: string, baseOffset: number): Segment {
    const fd = io('open segment', path, () => fs.openSync(path, 'r+'))
    try {
      const len = io('stat segment', path, () => fs.fstatSync(fd).size)
      if (len < SEGMENT_HEADER_LEN + 4) throw corrupt(path, undefined, 0, `segment file is only ${len} bytes`)
      const head = Buffer.alloc(SEGMENT_HEADER_LEN)
      io('read segment', path, () => readAt(fd, head, 0, SEGMENT_HEADER_LEN, 0))
      const header = decodeSegmentHeader(head)
      if (typeof header === 'string') throw corrupt(path, undefined, 0, header)
      if (header.baseOffset !== baseOffset) throw corrupt(path, undefined, 0, 'segment header base offset does not match the file name')
      if (header.segmentBytes !== len) throw corrupt(path, undefined, 0, `segment file is ${len} bytes but its header says ${header.segmentBytes}`)
      return new Segment(path, fd, baseOffset, header.createdMs, len)
    } catch (err) {
      fs.closeSync(fd)
      throw err
    }
  }

  get records(): number {
    return this.nextOffset - this.baseOffset
  }

  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd)
    this.fd = -1
  }

  /**
   * The frame at `pos` (FORMAT.md 5) through window `w`: its `frame_len`, or FRAME_END or
   * a problem (< 0). After a valid result the whole frame is in `w`.
   */
  frameAt(w: Window, pos: number, expectedOffset: number, checkCrc: boolean, chunk: number, limit: number): number {
    const left = this.size - pos
    if (left < 8) return FRAME_END
    if (!w.has(this, pos, 8)) w.load(this, pos, 8, chunk, limit)
    if (!w.has(this, pos, 8)) return FRAME_END
    const len = u32(w.buf, pos - w.start + F_LEN)
    if (len === 0) return FRAME_END
    if (len < FRAME_HEADER_LEN || len - FRAME_HEADER_LEN > this.maxPayload || len > left) return BAD_LENGTH
    if (!w.has(this, pos, len)) w.load(this, pos, len, chunk, limit)
    // Only reads of the active segment's unwritten tail can fall short; they never happen.
    if (!w.has(this, pos, len)) return FRAME_END
    return checkFrame(w.buf, pos - w.start, left, expectedOffset, this.maxPayload, checkCrc)
  }

  /** Walks frames (checking CRCs) from `walk` until the end of data or a bad frame. */
  walk(w: Window, walk: Walk, indexInterval: number): WalkStop | undefined {
    for (;;) {
      const len = this.frameAt(w, walk.position, walk.nextOffset, true, SCAN_CHUNK_BYTES, this.size)
      if (len === FRAME_END) return undefined
      if (len < 0) return { problem: len, position: walk.position, offset: walk.nextOffset }
      const at = walk.position - w.start
      walk.advance(this.baseOffset, len, u64(w.buf, at + F_TIMESTAMP), u32(w.buf, at + F_FLAGS), indexInterval)
    }
  }

  adoptWalk(walk: Walk): void {
    this.end = walk.position
    this.nextOffset = walk.nextOffset
    this.minTs = walk.minTs
    this.maxTs = walk.maxTs
    this.lastEntryPosition = walk.lastEntryPosition
    this.index = walk.entries
  }

  /** Full scan from the first frame; any bad frame in a sealed segment is corruption. */
  rebuildSealed(w: Window, indexInterval: number): void {
    const walk = Walk.fromStart(this.baseOffset)
    const stop = this.walk(w, walk, indexInterval)
    if (stop !== undefined) throw corrupt(this.path, stop.offset, stop.position, describeProblem(stop.problem))
    this.adoptWalk(walk)
  }

  /**
   * Uses an index file for a sealed segment if it checks out: it starts at the first
   * record, and the frames from its last entry end exactly at its `end_position` with
   * offset `next_offset`. Returns false (changing nothing) otherwise.
   */
  adoptSealedIndex(w: Window, idx: IndexFile): boolean {
    const n = idx.count
    if (n === 0 || idx.relative[0] !== 0 || idx.position[0] !== SEGMENT_HEADER_LEN) return false
    const entries = Entries.from(idx)
    const walk = Walk.fromEntry(this.baseOffset, entries, n - 1)
    if (
      this.walk(w, walk, Number.MAX_SAFE_INTEGER) !== undefined ||
      walk.position !== idx.endPosition ||
      walk.nextOffset !== idx.nextOffset ||
      walk.maxTs > idx.maxTimestamp ||
      walk.minTs < idx.minTimestamp
    ) {
      return false
    }
    this.end = walk.position
    this.nextOffset = walk.nextOffset
    this.minTs = idx.minTimestamp
    this.maxTs = idx.maxTimestamp
    this.lastEntryPosition = idx.position[n - 1]
    this.index = entries
    return true
  }

  readIndex(): IndexFile | undefined {
    let bytes: Buffer
    try {
      bytes = fs.readFileSync(this.indexPath)
    } catch {
      return undefined
    }
    return decodeIndex(bytes, this.baseOffset, this.size)
  }

  indexFile(): IndexFile {
    const e = this.index
    return {
      baseOffset: this.baseOffset,
      nextOffset: this.nextOffset,
      endPosition: this.end,
      minTimestamp: this.minTs,
      maxTimestamp: this.maxTs,
      relative: e.relative,
      position: e.position,
      maxTs: e.maxTs,
      count: e.count,
    }
  }

  /** Writes the index file (temp name, fsync, rename). The caller synced the data first (FORMAT.md 4). */
  writeIndex(): void {
    io('write index', this.indexPath, () => writeFileAtomic(this.indexPath, encodeIndex(this.indexFile())))
  }

  /** A walk from the last index entry whose frame checks out, or from the first record. */
  startFromIndex(w: Window, idx: IndexFile): Walk {
    const entries = Entries.from(idx)
    for (let i = idx.count - 1; i >= 0; i--) {
      const len = this.frameAt(w, idx.position[i], this.baseOffset + idx.relative[i], true, SCAN_CHUNK_BYTES, this.size)
      if (len > 0) return Walk.fromEntry(this.baseOffset, entries, i)
    }
    return Walk.fromStart(this.baseOffset)
  }

  /** Position of the last non-zero byte at or after `from`, or -1 (for damage reports). */
  lastNonzeroAtOrAfter(from: number): number {
    const chunk = Buffer.allocUnsafeSlow(Math.min(SCAN_CHUNK_BYTES, Math.max(this.size - from, 0)))
    let end = this.size
    while (end > from) {
      const start = Math.max(from, end - chunk.length)
      const n = io('read segment', this.path, () => readAt(this.fd, chunk, 0, end - start, start))
      for (let i = n - 1; i >= 0; i--) if (chunk[i] !== 0) return start + i
      end = start
    }
    return -1
  }

  /** Counts frames from `pos` that pass length and CRC checks, whatever their offset. */
  countWellFormedFrom(pos: number): number {
    const w = new Window(SCAN_CHUNK_BYTES)
    let n = 0
    for (;;) {
      if (this.size - pos < 8) return n
      if (!w.has(this, pos, 8)) w.load(this, pos, 8, SCAN_CHUNK_BYTES, this.size)
      const len = u32(w.buf, pos - w.start + F_LEN)
      if (len < FRAME_HEADER_LEN || pos + len > this.size) return n
      if (!w.has(this, pos, FRAME_HEADER_LEN)) w.load(this, pos, len, SCAN_CHUNK_BYTES, this.size)
      // Any offset is accepted here: ask for the one the frame claims.
      const claimed = u64(w.buf, pos - w.start + F_OFFSET)
      const r = this.frameAt(w, pos, claimed, true, SCAN_CHUNK_BYTES, this.size)
      if (r <= 0) return n
      n++
      pos = align8(pos + r)
    }
  }

  /**
   * Zeroes everything after the end of data (FORMAT.md 6.5) and fsyncs. Node has no hole
   * punching: the rest of the page holding `end` is overwritten with zeros, the file is
   * cut at that page boundary and extended back to its size (the new range reads as
   * zeros). Cutting at a page boundary, never below `end`'s page, means a native reader
   * mapping the file (it reads at most the length word at its end of data) never touches
   * a page beyond the end of the file while this runs.
   */
  zeroTail(): void {
    const from = this.end
    const page = Math.min(from + (-from & 4095), this.size)
    io('zero segment tail', this.path, () => {
      if (page > from) {
        const zeros = Buffer.alloc(page - from)
        writeAll(this.fd, zeros, 0, zeros.length, from)
      }
      if (page < this.size) {
        fs.ftruncateSync(this.fd, page)
        fs.ftruncateSync(this.fd, this.size)
      }
    })
    io('fsync segment', this.path, () => fs.fsyncSync(this.fd))
  }

  /** `fdatasync` on the JS thread (roll, close); the caller poisons the log on failure. */
  syncData(): void {
    try {
      fs.fdatasyncSync(this.fd)
    } catch (err) {
      throw ioError('msync segment', this.path, err)
    }
  }
}
