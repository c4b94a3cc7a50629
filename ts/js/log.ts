// The pure-TypeScript engine: the same on-disk format as the Rust engine (FORMAT.md),
// written with buffered `fs.writeSync` calls instead of a memory map. Mirrors
// crates/seglog-core/src/log.rs: recovery, appends, reads, verify, sync, close.
//
// Writes: frames are built in one preallocated write buffer (header words through a
// Uint32Array, payload by `TypedArray#set`, CRC over the frame's one contiguous range)
// and written to the segment file in large chunks: when the buffer fills, at the end of
// the current tick (a queued microtask), and before a sync, a roll, a close or a read of
// buffered records. So a crash of the process loses at most the appends of the tick in
// progress (the native engine loses none: its appends land in a shared mapping).
import * as fs from 'node:fs'

import type { NativeOpenOptions, NativeProblem, NativeRecoveryReport, NativeRemovedSegment, NativeSegmentInfo, NativeSyncOutcome, NativeVerifyReport } from '../../native/binding.js'
import { seglogError, type SeglogError } from '../errors'
import { corrupt, fsyncDir, io, ioError, joinPath } from './files'
import { JsLock } from './lock'
import {
  FLAG_BATCH_CONTINUES,
  FRAME_END,
  FRAME_HEADER_LEN,
  F_LEN,
  F_TIMESTAMP,
  SEGMENT_HEADER_LEN,
  TWO_32,
  align8,
  crcRange,
  decodeSegmentHeader,
  describeProblem,
  maxPayloadForSegment,
  u32,
  u64,
} from './format'
import { SCAN_CHUNK_BYTES, Segment, Walk, Window, parseSegmentFileName, segmentFileName } from './segment'

export const DEFAULT_SEGMENT_BYTES = 64 << 20
export const DEFAULT_INDEX_INTERVAL_BYTES = 4096
export const DEFAULT_MAX_RECORD_BYTES = 16 << 20
const MIN_SEGMENT_BYTES = 4096
const MAX_SEGMENT_BYTES = 0xffffffff
const MIN_INDEX_INTERVAL_BYTES = 64
/** The write buffer; grows (to a power of two) for a record that does not fit. */
const WRITE_BUFFER_BYTES = 1 << 20
/** Bytes read per `pread` by sequential reads. */
const READ_CHUNK_BYTES = 1 << 20

if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) {
  // Frame headers are written through a Uint32Array (FORMAT.md is little-endian).
  throw new Error("seglog's JS engine needs a little-endian platform")
}

// The report shapes are the native binding's (type-only imports: erased at build, so this
// engine loads where the addon does not).
export type JsOpenOptions = NativeOpenOptions
export type JsSyncOutcome = NativeSyncOutcome
type RecoveryReport = NativeRecoveryReport
type Problem = NativeProblem
export type JsVerifyReport = NativeVerifyReport
export type JsSegmentInfo = NativeSegmentInfo
export type JsRemovedSegment = NativeRemovedSegment

/** `ERR_SEGLOG_UNSUPPORTED`: a feature the JS engine does not implement. */
export function unsupported(feature: string): SeglogError {
  return seglogError('ERR_SEGLOG_UNSUPPORTED', `${feature} is not supported with engine: 'js' (use the native engine)`)
}

function invalid(message: string): SeglogError {
  return seglogError('ERR_SEGLOG_INVALID_ARGUMENT', message)
}

function tooLarge(size: number, max: number): SeglogError {
  return seglogError('ERR_SEGLOG_RECORD_TOO_LARGE', `record of ${size} bytes exceeds maxRecordBytes (${max})`)
}

function closedError(): SeglogError {
  return seglogError('ERR_SEGLOG_CLOSED', 'the log is closed')
}

export class JsLog {
  readonly dir: string
  /** The native engine's registry handle; unused here. */
  readonly handle = -1
  readonly readOnly = false
  readonly retentionError = null
  readonly maxRecordBytes: number
  readonly #segmentBytes: number
  readonly #indexInterval: number
  #segments: Segment[] = []
  #active!: Segment
  #lock: JsLock | undefined
  #closed = false
  #durable = 0
  #poison: SeglogError | undefined
  readonly #recovery: RecoveryReport = { indexesRebuilt: [], tempFilesRemoved: [] }

  // The write buffer: `#wbuf[0]` is file position `#wstart` of the active segment, and
  // `#wlen` bytes (the frames from offset `#bufferedFrom` on) are not written yet.
  #wbuf: Buffer = Buffer.allocUnsafeSlow(WRITE_BUFFER_BYTES)
  #wu32: Uint32Array = new Uint32Array(this.#wbuf.buffer, 0, WRITE_BUFFER_BYTES >>> 2)
  #wstart = SEGMENT_HEADER_LEN
  #wlen = 0
  #bufferedFrom = 0
  #flushQueued = false
  /** Bytes of segment files read by `get` and `readBatch`. */
  readonly #window = new Window(64 << 10)

  private constructor(dir: string, segmentBytes: number, indexInterval: number, maxRecordBytes: number) {
    this.dir = dir
    this.#segmentBytes = segmentBytes
    this.#indexInterval = indexInterval
    this.maxRecordBytes = maxRecordBytes
  }

  /** Opens (creating if needed) the log in `dir` for writing and recovers it (FORMAT.md 6). */
  static open(dir: string, options: JsOpenOptions = {}): JsLog {
    if (options.readOnly) throw unsupported('readOnly')
    for (const name of ['retentionBytes', 'retentionMs', 'retentionRecords', 'archiveDir'] as const) {
      if (options[name] !== undefined) throw unsupported(name)
    }
    if (options.retainForCursors) throw unsupported('retainForCursors')
    const segmentBytes = options.segmentBytes ?? DEFAULT_SEGMENT_BYTES
    if (segmentBytes < MIN_SEGMENT_BYTES || segmentBytes > MAX_SEGMENT_BYTES) {
      throw invalid(`segmentBytes must be between ${MIN_SEGMENT_BYTES} and ${MAX_SEGMENT_BYTES}, got ${segmentBytes}`)
    }
    const interval = options.indexIntervalBytes ?? DEFAULT_INDEX_INTERVAL_BYTES
    if (interval < MIN_INDEX_INTERVAL_BYTES || interval > segmentBytes) {
      throw invalid(`indexIntervalBytes must be between ${MIN_INDEX_INTERVAL_BYTES} and segmentBytes (${segmentBytes}), got ${interval}`)
    }
    const fits = maxPayloadForSegment(segmentBytes)
    const m = options.maxRecordBytes
    if (m !== undefined && m > fits) {
      throw invalid(`maxRecordBytes (${m}) must fit in one segment: at most ${fits} for segmentBytes ${segmentBytes}`)
    }
    const log = new JsLog(dir, segmentBytes, interval, m ?? Math.min(DEFAULT_MAX_RECORD_BYTES, fits))
    io('create log directory', dir, () => fs.mkdirSync(dir, { recursive: true }))
    log.#lock = JsLock.take(dir)
    try {
      log.#recover()
    } catch (err) {
      log.#release()
      throw err
    }
    return log
  }

  #recover(): void {
    const found = this.#listSegments()
    this.#removeCursorTempFiles()
    if (found.length === 0) {
      this.#adoptActive(this.#createSegment(0))
      return
    }
    const w = new Window(SCAN_CHUNK_BYTES)
    for (let i = 0; i < found.length; i++) {
      const [base, path] = found[i]
      const seg = Segment.open(path, base)
      this.#segments.push(seg)
      const prev = this.#segments[this.#segments.length - 2]
      if (prev !== undefined && seg.baseOffset !== prev.nextOffset) {
        throw corrupt(seg.path, prev.nextOffset, 0, `segment starts at offset ${seg.baseOffset} but the previous segment ends at ${prev.nextOffset}`)
      }
      if (i === found.length - 1) this.#recoverActive(w, seg)
      else this.#loadSealed(w, seg, found[i + 1][0])
    }
    this.#adoptActive(this.#segments[this.#segments.length - 1])
    // The active segment was fsynced by its recovery, and sealed ones before their
    // successor was created: everything present is durable.
    this.#durable = this.#active.nextOffset
  }

  /** Segment files in base-offset order; deletes `*.tmp` files and orphan indexes. */
  #listSegments(): [number, string][] {
    const found: [number, string][] = []
    const indexes: [number, string][] = []
    let removed = false
    const names = io('list log directory', this.dir, () => fs.readdirSync(this.dir))
    for (const name of names) {
      const path = joinPath(this.dir, name)
      if (name.endsWith('.tmp')) {
        io('remove temp file', path, () => fs.unlinkSync(path))
        this.#recovery.tempFilesRemoved.push(path)
        removed = true
        continue
      }
      const base = parseSegmentFileName(name)
      if (base !== undefined) found.push([base, path])
      else if (name.endsWith('.idx')) {
        const b = parseSegmentFileName(`${name.slice(0, -4)}.seg`)
        if (b !== undefined) indexes.push([b, path])
      }
    }
    found.sort((a, b) => a[0] - b[0])
    const bases = new Set(found.map(([b]) => b))
    for (const [b, path] of indexes) {
      if (bases.has(b)) continue
      io('remove orphan index', path, () => fs.unlinkSync(path))
      this.#recovery.tempFilesRemoved.push(path)
      removed = true
    }
    if (removed) io('fsync directory', this.dir, () => fsyncDir(this.dir))
    return found
  }

  /** Leftover `cursors/*.tmp` files (FORMAT.md 9), as the native writer removes them. */
  #removeCursorTempFiles(): void {
    const dir = joinPath(this.dir, 'cursors')
    let names: string[]
    try {
      names = fs.readdirSync(dir)
    } catch {
      return
    }
    let removed = false
    for (const name of names) {
      if (!name.endsWith('.tmp')) continue
      const path = joinPath(dir, name)
      io('remove temp file', path, () => fs.unlinkSync(path))
      this.#recovery.tempFilesRemoved.push(path)
      removed = true
    }
    if (removed) io('fsync directory', dir, () => fsyncDir(dir))
  }

  /** A sealed segment must end exactly where the next one begins (log.rs `load_sealed`). */
  #loadSealed(w: Window, seg: Segment, nextBase: number): void {
    const idx = seg.readIndex()
    const adopted = idx !== undefined && seg.adoptSealedIndex(w, idx) && seg.nextOffset === nextBase
    if (adopted) return
    seg.rebuildSealed(w, this.#indexInterval)
    if (seg.nextOffset !== nextBase) {
      throw corrupt(
        seg.path,
        seg.nextOffset,
        seg.end,
        `sealed segment ends at offset ${seg.nextOffset} but the next segment, ${joinPath(this.dir, segmentFileName(nextBase))}, starts at ${nextBase}`,
      )
    }
    seg.writeIndex()
    this.#recovery.indexesRebuilt.push(seg.indexPath)
  }

  /** Walks the last segment from its last good index entry, cuts a torn tail or an open batch, zeroes the rest. */
  #recoverActive(w: Window, seg: Segment): void {
    const interval = this.#indexInterval
    const idx = seg.readIndex()
    let walk = idx !== undefined ? seg.startFromIndex(w, idx) : Walk.fromStart(seg.baseOffset)
    const startedAtFirst = walk.position === SEGMENT_HEADER_LEN
    let stop = seg.walk(w, walk, interval)
    // The minimum timestamp before the starting entry is known only from the index
    // file, and only if everything it covered survived.
    const idxMinExact = idx !== undefined && idx.nextOffset <= walk.nextOffset ? idx.minTimestamp : undefined
    if (!startedAtFirst) {
      if (idxMinExact !== undefined) {
        walk.minTs = Math.min(walk.minTs, idxMinExact)
      } else {
        walk = Walk.fromStart(seg.baseOffset)
        stop = seg.walk(w, walk, interval)
      }
    }
    if (idx === undefined || (!startedAtFirst && idxMinExact === undefined)) this.#recovery.indexesRebuilt.push(seg.indexPath)
    let reason = stop !== undefined ? `${describeProblem(stop.problem)} at offset ${stop.offset} (byte position ${stop.position})` : undefined
    if (walk.cutOpenBatch()) {
      reason = reason !== undefined ? `incomplete atomic batch at the tail (${reason})` : 'incomplete atomic batch at the tail'
    }
    if (reason !== undefined) {
      const cut = walk.position
      const last = seg.lastNonzeroAtOrAfter(cut)
      this.#recovery.truncation = {
        segment: seg.path,
        position: cut,
        firstDroppedOffset: walk.nextOffset,
        bytesDropped: last < 0 ? 0 : last + 1 - cut,
        recordsDropped: seg.countWellFormedFrom(cut),
        reason,
      }
    }
    seg.adoptWalk(walk)
    seg.zeroTail()
  }

  #createSegment(base: number): Segment {
    return Segment.create(this.dir, base, this.#segmentBytes, Date.now())
  }

  #adoptActive(seg: Segment): void {
    if (this.#segments[this.#segments.length - 1] !== seg) this.#segments.push(seg)
    this.#active = seg
    this.#wstart = seg.end
    this.#wlen = 0
    this.#bufferedFrom = seg.nextOffset
  }

  // ---- state ----

  get firstOffset(): number {
    this.#checkOpen()
    return this.#segments[0].baseOffset
  }

  get nextOffset(): number {
    this.#checkOpen()
    return this.#active.nextOffset
  }

  get durableOffset(): number {
    return this.#durable
  }

  get poisoned(): string | null {
    return this.#poison === undefined ? null : this.#poison.message
  }

  recoveryReport(): RecoveryReport {
    this.#checkOpen()
    return this.#recovery
  }

  refresh(): number {
    return this.nextOffset
  }

  #checkOpen(): void {
    if (this.#closed) throw closedError()
  }

  #checkWritable(): void {
    if (this.#closed) throw closedError()
    if (this.#poison !== undefined) throw this.#poison
  }

  /** A failed write or sync: every later write fails with the returned error (DURABILITY.md rule 7). */
  #poisonWith(what: string, path: string, err: unknown): SeglogError {
    if (this.#poison === undefined) {
      const cause = ioError(what, path, err)
      const detail = cause.message.slice(cause.message.indexOf(': ') + 2)
      const e = seglogError('ERR_SEGLOG_IO', `the log takes no more writes because a ${what} of ${path} failed: ${detail}; reopen it to run recovery`)
      if (cause.errno !== undefined) e.errno = cause.errno
      if (cause.osCode !== undefined) e.osCode = cause.osCode
      this.#poison = e
    }
    return this.#poison
  }

  // ---- writes ----

  /** Appends one record and returns its offset. `payload` and `timestamp` were checked by `Log`. */
  append(payload: Uint8Array, timestamp: number | undefined): number {
    if (this.#closed || this.#poison !== undefined) this.#checkWritable()
    const n = payload.length
    if (n > this.maxRecordBytes) throw tooLarge(n, this.maxRecordBytes)
    const framed = align8(FRAME_HEADER_LEN + n)
    if (this.#active.end + framed > this.#active.size) {
      this.#roll()
      if (this.#active.end + framed > this.#active.size) throw tooLarge(n, this.maxRecordBytes)
    }
    return this.#put(payload, timestamp === undefined ? Date.now() : timestamp, 0, framed)
  }

  /** Appends `values` atomically (FORMAT.md 2.2, `BATCH_CONTINUES`); returns the first offset. */
  appendBatch(values: readonly Uint8Array[], timestamp: number | undefined): number {
    this.#checkWritable()
    const count = values.length
    const first = this.#active.nextOffset
    if (count === 0) return first
    let framedTotal = 0
    for (let i = 0; i < count; i++) {
      const n = values[i].length
      if (n > this.maxRecordBytes) throw tooLarge(n, this.maxRecordBytes)
      framedTotal += align8(FRAME_HEADER_LEN + n)
    }
    const capacity = this.#segmentBytes - SEGMENT_HEADER_LEN
    const batchTooLarge = (): SeglogError =>
      seglogError(
        'ERR_SEGLOG_BATCH_TOO_LARGE',
        `batch of ${framedTotal} framed bytes does not fit in one segment (${capacity} bytes); an atomic batch must fit in a segment`,
      )
    if (framedTotal > capacity) throw batchTooLarge()
    if (this.#active.end + framedTotal > this.#active.size) {
      this.#roll()
      if (this.#active.end + framedTotal > this.#active.size) throw batchTooLarge()
    }
    const ts = timestamp === undefined ? Date.now() : timestamp
    const last = count - 1
    for (let i = 0; i < count; i++) {
      const v = values[i]
      this.#put(v, ts, i < last ? FLAG_BATCH_CONTINUES : 0, align8(FRAME_HEADER_LEN + v.length))
    }
    return first
  }

  /**
   * Builds the frame for `payload` in the write buffer at the active segment's end and
   * notes it in the segment's extent and index. The caller checked that it fits.
   */
  #put(payload: Uint8Array, ts: number, flags: number, framed: number): number {
    const seg = this.#active
    const pos = seg.end
    let p = pos - this.#wstart
    if (p + framed > this.#wbuf.length) {
      this.#flush()
      p = 0
      if (framed > this.#wbuf.length) this.#growWriteBuffer(framed)
    }
    const wb = this.#wbuf
    const u = this.#wu32
    const w = p >>> 2
    const len = FRAME_HEADER_LEN + payload.length
    const offset = seg.nextOffset
    // Padding first: the last 8 bytes of the frame, then header and payload over them.
    const last = w + (framed >>> 2)
    u[last - 2] = 0
    u[last - 1] = 0
    u[w + 1] = len
    u[w + 2] = offset >>> 0
    u[w + 3] = (offset / TWO_32) >>> 0
    u[w + 4] = ts >>> 0
    u[w + 5] = (ts / TWO_32) >>> 0
    u[w + 6] = flags
    wb.set(payload, p + FRAME_HEADER_LEN)
    u[w] = crcRange(wb, p + F_LEN, p + len)

    if (ts < seg.minTs) seg.minTs = ts
    if (ts > seg.maxTs) seg.maxTs = ts
    if (seg.lastEntryPosition < 0 || pos - seg.lastEntryPosition >= this.#indexInterval) {
      seg.index.push(offset - seg.baseOffset, pos, seg.maxTs)
      seg.lastEntryPosition = pos
    }
    seg.end = pos + framed
    seg.nextOffset = offset + 1
    this.#wlen = p + framed
    if (!this.#flushQueued) {
      this.#flushQueued = true
      queueMicrotask(this.#endOfTick)
    }
    return offset
  }

  readonly #endOfTick = (): void => {
    this.#flushQueued = false
    if (this.#closed || this.#poison !== undefined) return
    try {
      this.#flush()
    } catch {
      // The log is poisoned; the next write or sync reports it.
    }
  }

  #growWriteBuffer(bytes: number): void {
    let size = this.#wbuf.length
    while (size < bytes) size *= 2
    this.#wbuf = Buffer.allocUnsafeSlow(size)
    this.#wu32 = new Uint32Array(this.#wbuf.buffer, 0, size >>> 2)
  }

  /** Writes the buffered frames to the active segment file (the page cache). */
  #flush(): void {
    if (this.#wlen === 0) return
    const seg = this.#active
    let at = this.#wstart
    let from = 0
    try {
      while (from < this.#wlen) {
        const n = fs.writeSync(seg.fd, this.#wbuf, from, this.#wlen - from, at)
        from += n
        at += n
      }
    } catch (err) {
      // Records whose append returned may be lost: nothing more is acknowledged.
      throw this.#poisonWith('write', seg.path, err)
    }
    this.#wstart = seg.end
    this.#wlen = 0
    this.#bufferedFrom = seg.nextOffset
  }

  /** Seals the active segment (data synced, then its index) and creates the next one (FORMAT.md 7). */
  #roll(): void {
    const active = this.#active
    const base = active.nextOffset
    const replace = active.records === 0
    if (!replace) {
      this.#flush()
      try {
        active.syncData()
      } catch (err) {
        throw this.#poisonWith('sync', active.path, (err as { cause?: unknown }).cause ?? err)
      }
      active.writeIndex()
      if (base > this.#durable) this.#durable = base
    }
    // An empty active segment too small for the record (made with a smaller segmentBytes)
    // is replaced: the new file's rename overwrites it.
    const seg = this.#createSegment(base)
    if (replace) {
      this.#segments.pop()
      active.close()
      if (this.#window.seg === active) this.#window.forget()
    }
    this.#segments.push(seg)
    this.#adoptActive(seg)
  }

  /**
   * Starts a sync of everything appended so far: the buffer is written on this thread,
   * then `fdatasync` runs on a libuv worker. Throws at once if the log cannot sync.
   */
  sync(): Promise<JsSyncOutcome> {
    this.#checkWritable()
    this.#flush()
    const target = this.#active.nextOffset
    if (target <= this.#durable) return Promise.resolve({ durable: this.#durable })
    const seg = this.#active
    return new Promise((resolve) => {
      fs.fdatasync(seg.fd, (err) => {
        if (err !== null) {
          const e = this.#poisonWith('sync', seg.path, err)
          resolve({ code: e.code, message: e.message })
        } else if (this.#poison !== undefined) {
          resolve({ code: this.#poison.code, message: this.#poison.message })
        } else {
          if (target > this.#durable) this.#durable = target
          resolve({ durable: this.#durable })
        }
      })
    })
  }

  /** Writes the buffer and syncs it on this thread. */
  flush(): void {
    this.#checkWritable()
    this.#flush()
    const target = this.#active.nextOffset
    try {
      this.#active.syncData()
    } catch (err) {
      throw this.#poisonWith('sync', this.#active.path, (err as { cause?: unknown }).cause ?? err)
    }
    if (target > this.#durable) this.#durable = target
  }

  // ---- reads ----

  /**
   * The segment holding `offset` and its frame's position (a valid frame: length bounds
   * and offset checked, not yet its CRC), or -1 at or past `nextOffset`. Buffered
   * records are written first, so the file holds every frame read.
   */
  #locate(offset: number): number {
    this.#checkOpen()
    const active = this.#active
    if (offset >= active.nextOffset) return -1
    const first = this.#segments[0].baseOffset
    if (offset < first) {
      throw seglogError('ERR_SEGLOG_OFFSET_OUT_OF_RANGE', `offset ${offset} is below the first offset in the log (${first})`)
    }
    if (offset >= this.#bufferedFrom && this.#wlen !== 0) this.#flush()
    const seg = offset >= active.baseOffset ? active : this.#segmentOf(offset)
    this.#located = seg
    return this.#positionOf(seg, offset)
  }

  #located: Segment | undefined

  #segmentOf(offset: number): Segment {
    const s = this.#segments
    let lo = 0
    let hi = s.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (s[mid].baseOffset <= offset) lo = mid + 1
      else hi = mid
    }
    return s[lo - 1]
  }

  /**
   * How far reads of `seg` may load: bytes below it are written and never change, so a
   * window holding them stays valid (the active segment's buffered frames are not).
   */
  #readLimit(seg: Segment): number {
    return seg === this.#active ? this.#wstart : seg.end
  }

  /** Bytes read per `pread` by a lookup: an index interval's frames and then some. */
  #lookupChunk(): number {
    return Math.max(this.#indexInterval * 2, 16 << 10)
  }

  /** Position of `offset`'s frame through the sparse index; an index that lies is rebuilt. */
  #positionOf(seg: Segment, offset: number): number {
    let pos = this.#positionViaIndex(seg, offset)
    if (pos >= 0) return pos
    this.#rebuildIndexInPlace(seg)
    pos = this.#positionViaIndex(seg, offset)
    if (pos >= 0) return pos
    throw corrupt(seg.path, offset, undefined, 'record not found after rebuilding the index')
  }

  #positionViaIndex(seg: Segment, offset: number): number {
    const index = seg.index
    const i = index.countAtOrBelow(offset - seg.baseOffset)
    let pos = i === 0 ? SEGMENT_HEADER_LEN : index.position[i - 1]
    let at = i === 0 ? seg.baseOffset : seg.baseOffset + index.relative[i - 1]
    const w = this.#window
    const chunk = this.#lookupChunk()
    while (pos < seg.end) {
      const len = seg.frameAt(w, pos, at, false, chunk, this.#readLimit(seg))
      if (len <= 0) return -1
      if (at === offset) return pos
      pos = align8(pos + len)
      at++
    }
    return -1
  }

  #rebuildIndexInPlace(seg: Segment): void {
    const walk = Walk.fromStart(seg.baseOffset)
    const stop = seg.walk(new Window(SCAN_CHUNK_BYTES), walk, this.#indexInterval)
    if (walk.position < seg.end) {
      if (stop !== undefined) throw corrupt(seg.path, stop.offset, stop.position, describeProblem(stop.problem))
      throw corrupt(seg.path, walk.nextOffset, walk.position, 'unexpected end of data')
    }
    seg.index = walk.entries
  }

  /** Checks the frame at `pos` fully (bounds, CRC, offset) for a read; returns its length. */
  #checkedFrame(seg: Segment, pos: number, offset: number, chunk: number): number {
    const len = seg.frameAt(this.#window, pos, offset, true, chunk, this.#readLimit(seg))
    if (len > 0) return len
    if (len === FRAME_END) throw corrupt(seg.path, offset, pos, 'record missing before end of data')
    throw corrupt(seg.path, offset, pos, describeProblem(len))
  }

  /** `hotReadInto`: the whole frame of `offset` copied to `dest`; its length, 0 past the end, or minus the length needed. */
  readInto(offset: number, dest: Uint8Array): number {
    const pos = this.#locate(offset)
    if (pos < 0) return 0
    const seg = this.#located as Segment
    const len = this.#checkedFrame(seg, pos, offset, this.#lookupChunk())
    if (len > dest.length) return -len
    const w = this.#window
    w.buf.copy(dest, 0, pos - w.start, pos - w.start + len)
    return len
  }

  /**
   * `hotReadBatchInto`: frames of up to `maxRecords` records from `from`, checked and
   * copied to `dest` back to back and padded as on disk; stops before exceeding
   * `maxBytes` (one record at least) or `dest`. Returns the bytes copied, 0 at the end,
   * or minus the size the first record needs (log.rs `read_frames_into`).
   */
  readBatchInto(from: number, maxRecords: number, maxBytes: number, dest: Uint8Array): number {
    let records = 0
    let bytes = 0
    let needed = 0
    let offset = from
    const w = this.#window
    // The batch may reach buffered records: write them first (reads see only the file).
    if (this.#wlen !== 0 && from + maxRecords > this.#bufferedFrom) this.#flush()
    segments: while (records < maxRecords) {
      const start = this.#locate(offset)
      if (start < 0) break
      const seg = this.#located as Segment
      let pos = start
      let run = start // file position of the first checked byte not yet copied
      while (records < maxRecords && offset < seg.nextOffset) {
        if (!w.has(seg, pos, 8) || !w.has(seg, pos, u32(w.buf, pos - w.start + F_LEN))) {
          if (pos > run) w.buf.copy(dest, bytes, run - w.start, pos - w.start)
          bytes += pos - run
          run = pos
          w.load(seg, pos, 8, READ_CHUNK_BYTES, this.#readLimit(seg))
        }
        const len = this.#checkedFrame(seg, pos, offset, READ_CHUNK_BYTES)
        const framed = align8(pos + len) - pos
        const total = bytes + (pos - run) + framed
        if (total > dest.length || (records > 0 && total > maxBytes)) {
          if (records === 0) needed = framed
          if (pos > run) w.buf.copy(dest, bytes, run - w.start, pos - w.start)
          bytes += pos - run
          break segments
        }
        pos += framed
        offset++
        records++
      }
      if (pos > run) w.buf.copy(dest, bytes, run - w.start, pos - w.start)
      bytes += pos - run
      if (offset < seg.nextOffset) break
    }
    return records > 0 ? bytes : -needed
  }

  /** The first offset whose timestamp is `>= timestamp`, or null (log.rs `offset_for_timestamp`). */
  offsetForTimestamp(timestamp: number): number | null {
    this.#checkOpen()
    if (this.#wlen !== 0) this.#flush()
    for (const seg of this.#segments) {
      // Every record of earlier segments is older than `timestamp` (their maximum is).
      if (seg.records > 0 && seg.maxTs >= timestamp) {
        let found = this.#findTimestampViaIndex(seg, timestamp)
        if (found >= 0) return found
        this.#rebuildIndexInPlace(seg)
        found = this.#findTimestampViaIndex(seg, timestamp)
        if (found >= 0) return found
        throw corrupt(seg.path, undefined, undefined, `no record with timestamp >= ${timestamp} although the segment's maximum is ${seg.maxTs}`)
      }
    }
    return null
  }

  #findTimestampViaIndex(seg: Segment, ts: number): number {
    const index = seg.index
    const j = index.countMaxTsBelow(ts)
    let pos = j === 0 ? SEGMENT_HEADER_LEN : index.position[j - 1]
    let at = j === 0 ? seg.baseOffset : seg.baseOffset + index.relative[j - 1]
    const w = this.#window
    const chunk = this.#lookupChunk()
    while (at < seg.nextOffset) {
      const len = seg.frameAt(w, pos, at, true, chunk, this.#readLimit(seg))
      if (len <= 0) return -1
      if (u64(w.buf, pos - w.start + F_TIMESTAMP) >= ts) return at
      pos = align8(pos + len)
      at++
    }
    return -1
  }

  // ---- lifecycle ----

  /** Removes every whole sealed segment below `offset` (never the active one), oldest first, durably (FORMAT.md 8). */
  deleteBefore(offset: number): JsRemovedSegment[] {
    this.#checkWritable()
    const removed: JsRemovedSegment[] = []
    while (this.#segments.length > 1 && this.#segments[0].nextOffset <= offset) {
      const seg = this.#segments[0]
      try {
        fs.unlinkSync(seg.indexPath)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError('delete index', seg.indexPath, err)
      }
      io('delete segment', seg.path, () => fs.unlinkSync(seg.path))
      removed.push({ path: seg.path, baseOffset: seg.baseOffset, nextOffset: seg.nextOffset, fileBytes: seg.size })
      this.#segments.shift()
      if (this.#window.seg === seg) this.#window.forget()
      seg.close()
    }
    if (removed.length > 0) {
      try {
        fsyncDir(this.dir)
      } catch (err) {
        throw this.#poisonWith('sync', this.dir, err)
      }
    }
    return removed
  }

  /** No retention option can be set with this engine (they are refused at open): nothing to remove. */
  enforceRetention(): JsRemovedSegment[] {
    this.#checkWritable()
    return []
  }

  truncate(_nextOffset: number): never {
    throw unsupported('truncate')
  }

  cursor(_name: string): never {
    throw unsupported('cursors')
  }

  cursors(): never {
    throw unsupported('cursors')
  }

  commitCursor(_name: string, _position: number): never {
    throw unsupported('cursors')
  }

  deleteCursor(_name: string): never {
    throw unsupported('cursors')
  }

  segments(): JsSegmentInfo[] {
    this.#checkOpen()
    return this.#segments.map((s) => {
      const info: JsSegmentInfo = {
        path: s.path,
        baseOffset: s.baseOffset,
        nextOffset: s.nextOffset,
        records: s.records,
        dataBytes: s.end,
        fileBytes: s.size,
        createdMs: s.createdMs,
        indexEntries: s.index.count,
      }
      if (s.records > 0) {
        info.minTimestamp = s.minTs
        info.maxTimestamp = s.maxTs
      }
      return info
    })
  }

  /** Full check of every segment: header, every frame, the zeroed tail and every index entry (log.rs `verify`). */
  verify(): JsVerifyReport {
    this.#checkOpen()
    if (this.#wlen !== 0) this.#flush()
    const report: JsVerifyReport = {
      ok: true,
      segments: this.#segments.length,
      records: 0,
      bytes: 0,
      indexEntries: 0,
      firstOffset: this.#segments[0].baseOffset,
      nextOffset: this.#active.nextOffset,
    }
    const w = new Window(SCAN_CHUNK_BYTES)
    let expectedBase = report.firstOffset
    for (const seg of this.#segments) {
      const problem = verifySegment(w, seg, expectedBase, report)
      if (problem !== undefined) {
        report.ok = false
        report.problem = problem
        break
      }
      expectedBase = seg.nextOffset
    }
    return report
  }

  /** Writes the buffer, syncs the data, then writes the active segment's index; releases everything. Idempotent. */
  close(): void {
    if (this.#closed) return
    let error: unknown
    if (this.#poison === undefined) {
      try {
        this.flush()
        this.#active.writeIndex()
      } catch (err) {
        error = err
      }
    }
    this.#closed = true
    this.#release()
    if (error !== undefined) throw error
  }

  #release(): void {
    for (const seg of this.#segments) {
      try {
        seg.close()
      } catch {
        // Nothing is written through these descriptors any more.
      }
    }
    this.#window.forget()
    this.#lock?.release()
    this.#lock = undefined
  }
}

function verifySegment(w: Window, seg: Segment, expectedBase: number, report: JsVerifyReport): Problem | undefined {
  const problem = (offset: number | undefined, position: number | undefined, reason: string): Problem => {
    const p: Problem = { segment: seg.path, reason }
    if (offset !== undefined) p.offset = offset
    if (position !== undefined) p.position = position
    return p
  }
  const head = Buffer.alloc(SEGMENT_HEADER_LEN)
  io('read segment', seg.path, () => fs.readSync(seg.fd, head, 0, SEGMENT_HEADER_LEN, 0))
  const header = decodeSegmentHeader(head)
  if (typeof header === 'string') return problem(undefined, 0, header)
  if (seg.baseOffset !== expectedBase) return problem(expectedBase, 0, 'segment does not start where the previous one ends')
  const e = seg.index
  let pos = SEGMENT_HEADER_LEN
  let offset = seg.baseOffset
  let maxTs = 0
  let j = 0
  while (offset < seg.nextOffset) {
    const len = seg.frameAt(w, pos, offset, true, SCAN_CHUNK_BYTES, seg.size)
    if (len === FRAME_END) return problem(offset, pos, 'record missing before end of data')
    if (len < 0) return problem(offset, pos, describeProblem(len))
    const ts = u64(w.buf, pos - w.start + F_TIMESTAMP)
    if (ts > maxTs) maxTs = ts
    if (j < e.count && e.position[j] === pos) {
      if (e.relative[j] !== offset - seg.baseOffset || e.maxTs[j] !== maxTs) {
        return problem(offset, pos, 'index entry disagrees with the record it points at')
      }
      j++
      report.indexEntries++
    }
    report.records++
    pos = align8(pos + len)
    offset++
  }
  if (j !== e.count) return problem(undefined, j < e.count ? e.position[j] : undefined, 'index entry does not point at a record')
  if (pos !== seg.end) return problem(offset, pos, 'end of data disagrees with the records')
  const tailEnd = Math.min(pos + 4096, seg.size)
  if (tailEnd > pos) {
    const tail = Buffer.alloc(tailEnd - pos)
    io('read segment', seg.path, () => fs.readSync(seg.fd, tail, 0, tail.length, pos))
    for (let i = 0; i < tail.length; i++) if (tail[i] !== 0) return problem(offset, pos, 'non-zero bytes after the end of data')
  }
  report.bytes += pos
  return undefined
}

