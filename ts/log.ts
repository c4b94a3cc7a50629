import { statSync } from 'node:fs'

import { loadNative, native, nativeLoadError, type LogBackend, type NativeLog } from './native'
import { JsLog } from './js/log'
import { codecs, checkCodec, isFastCodec, type Codec, type FastCodec } from './codecs'
import { checkUint, fromNative, fromOutcome, rangeError, seglogError, typeError } from './errors'
import { GroupCommit, type Durability } from './group-commit'

export type { Durability }

/**
 * Which engine reads and writes the log's files (both follow docs/FORMAT.md byte for
 * byte, so either opens a log the other wrote):
 * - `'native'` (default): the Rust addon. If it cannot be loaded and `engine` was not
 *   given, the JS engine is used instead, with a one-time warning (`SEGLOG_JS_FALLBACK`).
 * - `'js'`: pure TypeScript. Writers only; no cursors, truncate or retention options
 *   (`ERR_SEGLOG_UNSUPPORTED`); buffered appends reach the file at the end of each tick.
 */
export type Engine = 'native' | 'js'

export interface LogOptions<T> {
  /** Default `'native'`, falling back to `'js'` when the addon cannot be loaded. See `Engine`. */
  engine?: Engine
  /** How values become bytes. Default: raw bytes (`Uint8Array` in, `Buffer` out). */
  codec?: Codec<T>
  /** Preallocated size of each segment file. Default 64 MiB. */
  segmentBytes?: number
  /** Bytes between sparse index entries. Default 4096. */
  indexIntervalBytes?: number
  /** Largest encoded value accepted. Default 16 MiB, and at most what fits in a segment. */
  maxRecordBytes?: number
  /** Default `'interval'`. See `Durability`. Writers only. */
  durability?: Durability
  /** `'interval'` mode: background sync period. Default 100 ms. */
  syncIntervalMs?: number
  /** `'interval'` mode: also sync once this many bytes were appended. Default: no limit. */
  syncIntervalBytes?: number
  /**
   * Open as a reader: takes no lock, never writes, and works while a writer (another
   * process, worker or `Log`) appends. Sees records as soon as they are appended.
   */
  readOnly?: boolean
  /**
   * Retention, applied whenever a segment rolls and by `enforceRetention()`: whole
   * sealed segments are removed from the front (never the active one) while the segment
   * files' total size (preallocated, so in steps of `segmentBytes`) exceeds this.
   */
  retentionBytes?: number
  /** Remove segments whose newest record is older than this (ms). */
  retentionMs?: number
  /** Keep at least this many records; remove segments not needed for that. */
  retentionRecords?: number
  /** Retention never removes records at or after the slowest cursor's position. */
  retainForCursors?: boolean
  /** Move removed segments (and their indexes) here instead of deleting them. */
  archiveDir?: string
}

/** A segment removed by `deleteBefore`, retention or `truncate`. */
export interface RemovedSegment {
  path: string
  baseOffset: number
  nextOffset: number
  fileBytes: number
  /** Where it was moved, with `archiveDir`. */
  archivedTo?: string
}

export interface TruncateResult {
  previousNextOffset: number
  nextOffset: number
  recordsRemoved: number
  segmentsRemoved: RemovedSegment[]
}

export interface TimestampBounds {
  /** Smallest and largest record timestamp of the whole log (absent when it is empty). */
  min?: number
  max?: number
  segments: { baseOffset: number; nextOffset: number; min?: number; max?: number }[]
}

export interface CursorInfo {
  name: string
  position: number
  /** When it was last committed (ms since the epoch). */
  committedMs: number
}

export interface LogStats {
  /** Which engine this log runs on. */
  engine: Engine
  firstOffset: number
  nextOffset: number
  records: number
  segmentCount: number
  segments: SegmentInfo[]
  indexEntries: number
  /** Sum of the segment and index files' sizes. */
  fileBytes: number
  /** Disk space actually allocated to them (`st_blocks`). */
  bytesOnDisk: number
  durability: {
    mode: Durability | 'readOnly'
    durableOffset: number
    syncs: number
    lastSyncMs: number
    /** The error that poisoned the log, if a sync failed. */
    poisoned?: string
  }
  /** The last error automatic retention met when a segment rolled. */
  retentionError?: string
}

export interface TailOptions {
  /**
   * First offset to yield, or a cursor (its position). Default: `nextOffset` (only
   * records appended from now on).
   */
  from?: number | Cursor
  /** Aborting it ends the iteration (it returns; nothing is thrown). */
  signal?: AbortSignal
  /** Records fetched per engine call. Default 1000. */
  maxRecords?: number
}

export interface LogRecord<T> {
  offset: number
  /** Milliseconds since the Unix epoch: given to `append`, or the time of the append. */
  timestamp: number
  value: T
}

export interface ReadOptions {
  /** First offset to read (inclusive), or a cursor (its position). Default: `firstOffset`. */
  from?: number | Cursor
  /** Start at the first record whose timestamp is >= `since` (see `offsetForTimestamp`). */
  since?: number
  /** Offset to stop before (exclusive). Default: `nextOffset` when reading starts. */
  to?: number
}

export interface ReadBatchOptions {
  /** Default 1000. */
  maxRecords?: number
  /** Soft limit on encoded bytes returned; at least one record is always returned. Default 1 MiB. */
  maxBytes?: number
}

export interface SegmentInfo {
  path: string
  baseOffset: number
  nextOffset: number
  records: number
  /** Bytes written: segment header plus record frames. */
  dataBytes: number
  /** Preallocated file size. */
  fileBytes: number
  createdMs: number
  minTimestamp?: number
  maxTimestamp?: number
  indexEntries: number
}

export interface VerifyProblem {
  segment: string
  offset?: number
  position?: number
  reason: string
}

export interface VerifyReport {
  ok: boolean
  segments: number
  records: number
  bytes: number
  indexEntries: number
  firstOffset: number
  nextOffset: number
  /** The first problem found; verification stops there. */
  problem?: VerifyProblem
}

export interface RecoveryReport {
  /** What was cut from a torn or corrupt tail of the last segment when the log opened. */
  truncation?: {
    segment: string
    position: number
    firstDroppedOffset: number
    bytesDropped: number
    recordsDropped: number
    reason: string
  }
  indexesRebuilt: string[]
  tempFilesRemoved: string[]
}

// Frame layout, docs/FORMAT.md 2.2: crc u32 | frame_len u32 | offset u64 | timestamp u64 | flags u32 | payload.
const FRAME_HEADER_LEN = 28
const TIMESTAMP_AT = 16
const LEN_WORD = 1 // frame_len at byte 4
const TS_WORD = 4 // timestamp at byte 16
const TWO_32 = 4294967296
const DEFAULT_BATCH_RECORDS = 1000
const DEFAULT_BATCH_BYTES = 1 << 20
const ITER_BUFFER_MIN = 64 << 10
const ITER_BUFFER_MAX = 4 << 20
const DEFAULT_SYNC_INTERVAL_MS = 100
/** A reader's tail polls for new records from every 1 ms, backing off to this. */
const TAIL_POLL_MAX_MS = 4
const align8 = (n: number): number => (n + 7) & ~7

/**
 * An append-only log in a directory. One writer per directory (others get
 * `ERR_SEGLOG_LOCKED`). Offsets are dense from 0.
 */
export class Log<T = Uint8Array> implements AsyncDisposable {
  /** The engine: the native addon's `NativeLog`, or the pure-TypeScript `JsLog`. */
  readonly #engine: LogBackend
  /** The JS engine, when it is the engine: the hot path branches on it once per call. */
  readonly #js: JsLog | undefined
  readonly #handle: number
  readonly #codec: Codec<T>
  readonly #fast: FastCodec<T> | undefined
  readonly #raw: boolean
  readonly #maxRecordBytes: number
  readonly #recovery: RecoveryReport
  #closed = false
  #scratch: Buffer = Buffer.allocUnsafeSlow(4096)
  #staging: Buffer = Buffer.allocUnsafeSlow(64 << 10)
  #lengths: Uint32Array = new Uint32Array(1024)

  // Durability and group commit.
  readonly #readOnly: boolean
  readonly #durability: Durability
  readonly #commit: GroupCommit
  /** Tails waiting for records: called after every append, and on close. */
  #tailWakers: (() => void)[] = []
  /** The end left by each truncation, in order (tails restart at the lowest since they last looked). */
  #cuts: number[] = []

  private constructor(engine: LogBackend, js: JsLog | undefined, codec: Codec<T>, durability: Durability, syncIntervalMs: number, syncIntervalBytes: number | undefined) {
    const nativeLog = engine
    this.#engine = engine
    this.#js = js
    this.#handle = engine.handle
    this.#codec = codec
    this.#fast = isFastCodec(codec) ? codec : undefined
    this.#raw = codec === (codecs.raw as Codec<unknown>)
    this.#maxRecordBytes = nativeLog.maxRecordBytes
    this.#recovery = nativeLog.recoveryReport() as RecoveryReport
    this.#readOnly = nativeLog.readOnly
    this.#durability = durability
    this.#commit = new GroupCommit(() => nativeLog.sync(), this.#readOnly ? 0 : nativeLog.durableOffset, this.#readOnly ? undefined : durability, syncIntervalMs, syncIntervalBytes)
  }

  /** Opens or creates the log in `dir`, recovering it after a crash (see `recovery`). */
  static async open<T = Uint8Array>(dir: string, options: LogOptions<T> = {}): Promise<Log<T>> {
    if (typeof dir !== 'string' || dir.length === 0) throw typeError('dir must be a non-empty string')
    if (options === null || typeof options !== 'object') throw typeError('options must be an object')
    const {
      engine: engineOption,
      codec = codecs.raw as unknown as Codec<T>,
      segmentBytes,
      indexIntervalBytes,
      maxRecordBytes,
      durability,
      syncIntervalMs = DEFAULT_SYNC_INTERVAL_MS,
      syncIntervalBytes,
      readOnly = false,
      retentionBytes,
      retentionMs,
      retentionRecords,
      retainForCursors = false,
      archiveDir,
    } = options
    checkCodec<T>(codec)
    for (const [name, v] of [
      ['segmentBytes', segmentBytes],
      ['indexIntervalBytes', indexIntervalBytes],
      ['maxRecordBytes', maxRecordBytes],
      ['syncIntervalMs', syncIntervalMs],
      ['syncIntervalBytes', syncIntervalBytes],
      ['retentionBytes', retentionBytes],
      ['retentionMs', retentionMs],
      ['retentionRecords', retentionRecords],
    ] as const) {
      if (v !== undefined) checkUint(name, v)
    }
    if (syncIntervalMs < 1 || syncIntervalMs > 0x7fffffff) {
      throw rangeError('ERR_SEGLOG_INVALID_ARGUMENT', `syncIntervalMs must be between 1 and 2^31-1, got ${syncIntervalMs}`)
    }
    if (syncIntervalBytes === 0) throw rangeError('ERR_SEGLOG_INVALID_ARGUMENT', 'syncIntervalBytes must be at least 1')
    if (typeof readOnly !== 'boolean') throw typeError(`readOnly must be a boolean, got ${typeof readOnly}`)
    if (typeof retainForCursors !== 'boolean') throw typeError(`retainForCursors must be a boolean, got ${typeof retainForCursors}`)
    if (archiveDir !== undefined && (typeof archiveDir !== 'string' || archiveDir.length === 0)) {
      throw typeError('archiveDir must be a non-empty string')
    }
    if (durability !== undefined && durability !== 'none' && durability !== 'interval' && durability !== 'sync') {
      if (typeof durability !== 'string') throw typeError(`durability must be a string, got ${typeof durability}`)
      throw rangeError('ERR_SEGLOG_INVALID_ARGUMENT', `durability must be 'none', 'interval' or 'sync', got '${durability}'`)
    }
    if (readOnly && durability !== undefined) {
      throw rangeError('ERR_SEGLOG_INVALID_ARGUMENT', 'durability applies to writers; a readOnly log never writes')
    }
    if (engineOption !== undefined && engineOption !== 'native' && engineOption !== 'js') {
      if (typeof engineOption !== 'string') throw typeError(`engine must be a string, got ${typeof engineOption}`)
      throw rangeError('ERR_SEGLOG_INVALID_ARGUMENT', `engine must be 'native' or 'js', got '${engineOption}'`)
    }
    let useJs = engineOption === 'js'
    if (!useJs && loadNative() === undefined) {
      const why = nativeLoadError()?.message ?? 'unknown error'
      if (engineOption === 'native') {
        throw seglogError('ERR_SEGLOG_UNSUPPORTED', `engine: 'native' was asked for but the native addon cannot be loaded (${why}); use engine: 'js'`)
      }
      warnJsFallback(why)
      useJs = true
    }
    const engineOptions = {
      segmentBytes,
        indexIntervalBytes,
        maxRecordBytes,
        readOnly,
        retentionBytes,
        retentionMs,
        retentionRecords,
        retainForCursors,
        archiveDir,
      // 'sync' mode syncs per group commit: track dirty pages finely (see the engine).
      frequentSyncs: durability === 'sync',
    }
    let engine: LogBackend
    let js: JsLog | undefined
    try {
      if (useJs) engine = js = JsLog.open(dir, engineOptions)
      else engine = native.NativeLog.open(dir, engineOptions)
    } catch (err) {
      throw fromNative(err)
    }
    return new Log<T>(engine, js, codec, durability ?? 'interval', syncIntervalMs, syncIntervalBytes)
  }

  /** Offset of the oldest record still in the log (a reader catches up with the writer first). */
  get firstOffset(): number {
    this.#check()
    if (this.#readOnly) this.#refresh()
    return this.#engine.firstOffset
  }

  /**
   * Offset the next appended record will get. For a `readOnly` log: the offset after the
   * last record the writer has appended so far (reading it catches up with the writer).
   */
  get nextOffset(): number {
    this.#check()
    return this.#readOnly ? this.#refresh() : this.#engine.nextOffset
  }

  /** Records below this offset are known to be on stable storage (0 for a reader). */
  get durableOffset(): number {
    return this.#commit.durable
  }

  get durability(): Durability | undefined {
    return this.#readOnly ? undefined : this.#durability
  }

  get readOnly(): boolean {
    return this.#readOnly
  }

  /** The engine this log runs on: `'native'` (the Rust addon) or `'js'`. */
  get engine(): Engine {
    return this.#js === undefined ? 'native' : 'js'
  }

  /** Syncs done by this handle and how long the last one took (ms). */
  get syncStats(): { syncs: number; lastSyncMs: number } {
    return { syncs: this.#commit.syncs, lastSyncMs: this.#commit.lastSyncMs }
  }

  get maxRecordBytes(): number {
    return this.#maxRecordBytes
  }

  get closed(): boolean {
    return this.#closed
  }

  /** What recovery did when this log was opened. */
  get recovery(): RecoveryReport {
    return this.#recovery
  }

  /** Appends `value` and returns its offset. `timestamp` defaults to now (ms since epoch). */
  append(value: T, timestamp?: number): number {
    if (this.#closed) throw closedError()
    const bytes = this.#raw ? checkRaw(value) : this.#encode(value)
    if (bytes.length > this.#maxRecordBytes) throw tooLarge(bytes.length, this.#maxRecordBytes)
    if (timestamp !== undefined) checkUint('timestamp', timestamp)
    let offset: number
    try {
      offset = this.#js === undefined ? native.hotAppend(this.#handle, bytes, timestamp) : this.#js.append(bytes, timestamp)
    } catch (err) {
      throw this.#writeError(err)
    }
    this.#appended(bytes.length)
    return offset
  }

  /**
   * Appends `value` and resolves with its offset once it is on stable storage (it rides
   * on a group-commit sync shared with every other caller). Rejects with `ERR_SEGLOG_IO`
   * if the sync fails (and the log then takes no more writes).
   */
  appendDurable(value: T, timestamp?: number): Promise<number> {
    let offset: number
    try {
      offset = this.append(value, timestamp)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#commit.whenDurable(offset + 1, offset) as Promise<number>
  }

  /** `appendBatch`, resolving with the first offset once the whole batch is durable. */
  appendBatchDurable(values: readonly T[], timestamp?: number): Promise<number> {
    let first: number
    try {
      first = this.appendBatch(values, timestamp)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#commit.whenDurable(first + values.length, first) as Promise<number>
  }

  /**
   * Resolves once every record appended before the call is on stable storage. Calls
   * made while a sync runs share the next one (group commit); the sync runs on a libuv
   * worker, never on the event loop.
   */
  sync(): Promise<void> {
    if (this.#closed) return Promise.reject(closedError())
    if (this.#readOnly) return Promise.reject(readOnlyError())
    return this.#commit.whenDurable(this.#engine.nextOffset, undefined) as Promise<unknown> as Promise<void>
  }

  /**
   * Appends `values` atomically (after a crash, all or none are there) and returns the
   * offset of the first. All get `timestamp` (default now). The batch must fit in one
   * segment (else `ERR_SEGLOG_BATCH_TOO_LARGE`).
   */
  appendBatch(values: readonly T[], timestamp?: number): number {
    if (this.#closed) throw closedError()
    if (!Array.isArray(values)) throw typeError('values must be an array')
    if (timestamp !== undefined) checkUint('timestamp', timestamp)
    const n = values.length
    if (n === 0) {
      this.#checkWritable()
      return this.#engine.nextOffset
    }
    const encoded: Uint8Array[] = this.#raw ? (values as unknown as Uint8Array[]) : values.map((v) => this.#encode(v))
    let total = 0
    for (let i = 0; i < n; i++) {
      const b = encoded[i]
      if (this.#raw) checkRaw(b)
      if (b.length > this.#maxRecordBytes) throw tooLarge(b.length, this.#maxRecordBytes)
      total += b.length
    }
    if (this.#js !== undefined) {
      // The JS engine copies each value straight into its write buffer: no staging copy.
      let first: number
      try {
        first = this.#js.appendBatch(encoded, timestamp)
      } catch (err) {
        throw this.#writeError(err)
      }
      this.#appended(total)
      return first
    }
    if (this.#staging.length < total) this.#staging = Buffer.allocUnsafeSlow(nextPow2(total))
    if (this.#lengths.length < n) this.#lengths = new Uint32Array(nextPow2(n))
    const staging = this.#staging
    const lengths = this.#lengths
    let pos = 0
    for (let i = 0; i < n; i++) {
      const b = encoded[i]
      staging.set(b, pos)
      lengths[i] = b.length
      pos += b.length
    }
    let first: number
    try {
      first = native.hotAppendPacked(this.#handle, staging.subarray(0, total), lengths.subarray(0, n), timestamp)
    } catch (err) {
      throw this.#writeError(err)
    }
    this.#appended(total)
    return first
  }

  /** The record at `offset`, or `undefined` at or past `nextOffset`. */
  get(offset: number): LogRecord<T> | undefined {
    if (this.#closed) throw closedError()
    checkUint('offset', offset)
    let n = this.#readInto(offset)
    if (n < 0) {
      this.#scratch = Buffer.allocUnsafeSlow(nextPow2(-n))
      n = this.#readInto(offset)
    }
    if (n === 0) return undefined
    const s = this.#scratch
    return { offset, timestamp: readU64(s, TIMESTAMP_AT), value: this.#decodeCopy(s, FRAME_HEADER_LEN, n) }
  }

  /**
   * Up to `maxRecords` records from `from` (fewer at the end of the log), in one call
   * into the engine. Returns `[]` at or past `nextOffset`.
   */
  readBatch(from: number, options: ReadBatchOptions = {}): LogRecord<T>[] {
    if (this.#closed) throw closedError()
    checkUint('from', from)
    const { maxRecords = DEFAULT_BATCH_RECORDS, maxBytes = DEFAULT_BATCH_BYTES } = options
    checkUint('maxRecords', maxRecords)
    checkUint('maxBytes', maxBytes)
    const out: LogRecord<T>[] = []
    if (maxRecords === 0) return out
    const [buf, bytes] = this.#fetch(from, maxRecords, maxBytes, Math.min(align8(maxBytes) + 4096, ITER_BUFFER_MAX))
    this.#parse(buf, bytes, from, out)
    return out
  }

  /**
   * Iterates records synchronously, fetching them from the engine in batches. The
   * fastest way to scan. Values of the raw codec are views of a batch buffer that is
   * never reused (keeping one keeps its batch alive; copy it to keep it alone).
   */
  *records(options: ReadOptions = {}): IterableIterator<LogRecord<T>> {
    const [from, to] = this.#range(options)
    let next = from
    let size = ITER_BUFFER_MIN
    const batch: LogRecord<T>[] = []
    while (next < to) {
      const [buf, bytes] = this.#fetch(next, to - next, size, size)
      batch.length = 0
      next = this.#parse(buf, bytes, next, batch)
      if (bytes > size / 2 && size < ITER_BUFFER_MAX) size *= 2
      for (let i = 0; i < batch.length; i++) yield batch[i]
    }
  }

  /** Async iteration over records from `from` to `to` (see `records` for the values). */
  async *read(options: ReadOptions = {}): AsyncIterableIterator<LogRecord<T>> {
    yield* this.records(options)
  }

  /**
   * Follows the log: yields the records from `from`, then waits for new ones and yields
   * them as they are appended, until `signal` aborts, the loop breaks or the log closes.
   * A tail on the writer's own `Log` wakes right after each append; a `readOnly` log
   * polls for the writer's records (from every 1 ms up to every 4 ms while idle: no busy
   * spinning). Records are fetched `maxRecords` at a time as the consumer pulls them, so
   * a slow consumer holds at most one batch in memory.
   */
  tail(options: TailOptions = {}): AsyncGenerator<LogRecord<T>, void, undefined> {
    this.#check()
    if (options === null || typeof options !== 'object') throw typeError('options must be an object')
    const { from, signal, maxRecords = DEFAULT_BATCH_RECORDS } = options
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw typeError('signal must be an AbortSignal')
    checkUint('maxRecords', maxRecords)
    if (maxRecords === 0) throw rangeError('ERR_SEGLOG_INVALID_ARGUMENT', 'maxRecords must be at least 1')
    let next = from === undefined ? this.nextOffset : from instanceof Cursor ? from.position : from
    checkUint('from', next)
    const first = this.#engine.firstOffset
    if (next < first) throw rangeError('ERR_SEGLOG_OFFSET_OUT_OF_RANGE', `from (${next}) is below firstOffset (${first})`)
    // Options are checked and `from` fixed now, not at the first `next()`: records
    // appended right after `tail()` returns are yielded.
    return this.#tail(next, signal, maxRecords)
  }

  async *#tail(next: number, signal: AbortSignal | undefined, maxRecords: number): AsyncGenerator<LogRecord<T>, void, undefined> {
    const batch: LogRecord<T>[] = []
    let seenCuts = this.#cuts.length
    while (!this.#closed && !isAborted(signal)) {
      batch.length = 0
      if (seenCuts !== this.#cuts.length) {
        // Records from the lowest cut on were removed and their offsets may be reused.
        for (; seenCuts < this.#cuts.length; seenCuts++) next = Math.min(next, this.#cuts[seenCuts])
      } else if (this.#readOnly) {
        // The writer may have truncated below `next` (a reader's end then goes down).
        const end = this.#refresh()
        if (end < next) next = end
      }
      const [buf, bytes] = this.#fetch(next, maxRecords, DEFAULT_BATCH_BYTES, ITER_BUFFER_MIN)
      if (bytes === 0) {
        await this.#waitForRecords(next, signal)
        continue
      }
      next = this.#parse(buf, bytes, next, batch)
      for (let i = 0; i < batch.length; i++) {
        yield batch[i]
        if (this.#closed || isAborted(signal)) return
      }
    }
  }

  // ---- lifecycle ----

  /**
   * Removes every whole segment whose records all lie below `offset` (never the active
   * segment), durably, and moves `firstOffset`. Returns what was removed. Reading below
   * the new `firstOffset` fails with `ERR_SEGLOG_OFFSET_OUT_OF_RANGE`.
   */
  async deleteBefore(offset: number): Promise<RemovedSegment[]> {
    this.#checkWritable()
    checkUint('offset', offset)
    return this.#write(() => this.#engine.deleteBefore(offset)).map(stripNulls) as RemovedSegment[]
  }

  /** Applies the retention options now (they also apply at every segment roll). */
  async enforceRetention(): Promise<RemovedSegment[]> {
    this.#checkWritable()
    return this.#write(() => this.#engine.enforceRetention()).map(stripNulls) as RemovedSegment[]
  }

  /**
   * Removes every record at or after `nextOffset` (rolling back an uncommitted suffix),
   * durably: later segments are deleted, the segment holding `nextOffset` is cut and its
   * tail zeroed and synced. Appends continue from `nextOffset`. A `nextOffset` inside an
   * atomic batch is refused (RangeError, `ERR_SEGLOG_INVALID_ARGUMENT`, naming the
   * batch's bounds). Everything appended before is synced first; an `appendDurable` made
   * meanwhile whose record is removed rejects with `ERR_SEGLOG_OFFSET_OUT_OF_RANGE`.
   * A crash midway leaves a log ending between `nextOffset` and the old end, never a gap.
   */
  async truncate(nextOffset: number): Promise<TruncateResult> {
    this.#checkWritable()
    checkUint('nextOffset', nextOffset)
    await this.sync()
    // No sync may run while the engine truncates (it would cover removed records).
    await this.#commit.idle()
    this.#checkWritable()
    let r: ReturnType<NativeLog['truncate']>
    try {
      r = this.#write(() => this.#engine.truncate(nextOffset))
    } finally {
      // Even a truncation that failed midway may have removed records.
      this.#commit.truncated(this.#engine.nextOffset, false)
    }
    if (r.recordsRemoved > 0) {
      this.#cuts.push(r.nextOffset)
      this.#commit.truncated(r.nextOffset, true)
      this.#wakeTails()
    }
    return { ...r, segmentsRemoved: r.segmentsRemoved.map(stripNulls) as RemovedSegment[] }
  }

  /**
   * The first offset whose record's timestamp is `>= timestamp`, or `undefined` if no
   * record is that recent. Timestamps need not be monotonic: the answer is exactly the
   * first such record in offset order (Kafka's semantics), found in O(log n) through the
   * index's running maximum timestamp.
   */
  offsetForTimestamp(timestamp: number): number | undefined {
    this.#check()
    checkUint('timestamp', timestamp)
    return this.#callNative(() => this.#engine.offsetForTimestamp(timestamp)) ?? undefined
  }

  /** Smallest and largest timestamp, overall and per segment. */
  timestampBounds(): TimestampBounds {
    const out: TimestampBounds = { segments: [] }
    for (const s of this.segments()) {
      out.segments.push(stripNulls({ baseOffset: s.baseOffset, nextOffset: s.nextOffset, min: s.minTimestamp, max: s.maxTimestamp }))
      if (s.minTimestamp !== undefined && (out.min === undefined || s.minTimestamp < out.min)) out.min = s.minTimestamp
      if (s.maxTimestamp !== undefined && (out.max === undefined || s.maxTimestamp > out.max)) out.max = s.maxTimestamp
    }
    return out
  }

  // ---- cursors ----

  /**
   * A named, durable consumer position stored with the log (in `<dir>/cursors/`). Its
   * `position` is the committed offset (the next one to consume), or `firstOffset` if it
   * was never committed. Works on `readOnly` logs too: cursor files are consumer state,
   * separate from the segments readers never touch.
   */
  cursor(name: string): Cursor {
    this.#check()
    if (typeof name !== 'string') throw typeError(`cursor name must be a string, got ${typeof name}`)
    const state = this.#callNative(() => this.#engine.cursor(name))
    return new Cursor(name, state?.position, state?.committedMs, {
      first: () => this.firstOffset,
      commit: (offset) => this.#commitCursor(name, offset),
      remove: () => {
        this.#check()
        return this.#callNative(() => this.#engine.deleteCursor(name))
      },
    })
  }

  /** Every committed cursor, by name. */
  cursors(): CursorInfo[] {
    this.#check()
    return this.#callNative(() => this.#engine.cursors())
  }

  async #commitCursor(name: string, offset: number): Promise<void> {
    this.#check()
    checkUint('offset', offset)
    const outcome = await this.#callNative(() => this.#engine.commitCursor(name, offset))
    if (typeof outcome.durable !== 'number') throw fromOutcome(outcome.code ?? 'ERR_SEGLOG_IO', outcome.message ?? 'cursor commit failed')
  }

  // ---- stats ----

  /** Segments, sizes, records, index entries and durability counters. */
  stats(): LogStats {
    const segments = this.segments()
    let fileBytes = 0
    let bytesOnDisk = 0
    let indexEntries = 0
    for (const s of segments) {
      indexEntries += s.indexEntries
      for (const path of [s.path, s.path.replace(/\.seg$/, '.idx')]) {
        try {
          const st = statSync(path)
          fileBytes += st.size
          bytesOnDisk += st.blocks * 512
        } catch {
          // An index not written yet, or a segment removed meanwhile.
        }
      }
    }
    const first = this.firstOffset
    const next = this.nextOffset
    const retentionError = this.#readOnly ? null : this.#engine.retentionError
    return stripNulls({
      engine: this.engine,
      firstOffset: first,
      nextOffset: next,
      records: next - first,
      segmentCount: segments.length,
      segments,
      indexEntries,
      fileBytes,
      bytesOnDisk,
      durability: stripNulls({
        mode: this.#readOnly ? ('readOnly' as const) : this.#durability,
        durableOffset: this.#commit.durable,
        syncs: this.#commit.syncs,
        lastSyncMs: this.#commit.lastSyncMs,
        poisoned: this.#commit.poison?.message,
      }),
      retentionError: retentionError ?? undefined,
    }) as LogStats
  }

  /** One entry per segment file, oldest first. */
  segments(): SegmentInfo[] {
    this.#check()
    return this.#engine.segments().map((s) => stripNulls(s) as SegmentInfo)
  }

  /** Checks every segment, record (CRC, offsets) and index entry. */
  async verify(): Promise<VerifyReport> {
    this.#check()
    const r = this.#engine.verify()
    return { ...r, problem: r.problem ? (stripNulls(r.problem) as VerifyProblem) : undefined }
  }

  /**
   * Waits for a sync in flight, syncs what is left (resolving every pending
   * `appendDurable` and `sync`), writes the index and releases the files and the
   * writer lock. Waiting tails end. Idempotent. After a failed sync it releases
   * everything without syncing again.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#commit.stop()
    this.#wakeTails()
    await this.#commit.idle()
    const next = this.#readOnly ? 0 : this.#engine.nextOffset
    try {
      this.#engine.close()
    } catch (err) {
      const e = fromNative(err) as Error
      this.#commit.fail(e)
      throw e
    }
    if (this.#commit.poison === undefined && !this.#readOnly) this.#commit.settle(next)
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  #check(): void {
    if (this.#closed) throw closedError()
  }

  /** After an append: feeds group commit and wakes tails. */
  #appended(bytes: number): void {
    this.#commit.appended(bytes)
    if (this.#tailWakers.length !== 0) this.#wakeTails()
  }

  /** A write-path call into the engine: errors may mean the engine poisoned the log. */
  #write<R>(f: () => R): R {
    try {
      return f()
    } catch (err) {
      throw this.#writeError(err)
    }
  }

  #checkWritable(): void {
    if (this.#closed) throw closedError()
    if (this.#readOnly) throw readOnlyError()
    if (this.#commit.poison !== undefined) throw this.#commit.poison
  }

  #callNative<R>(f: () => R): R {
    try {
      return f()
    } catch (err) {
      throw fromNative(err)
    }
  }

  #writeError(err: unknown): unknown {
    if (this.#commit.poison !== undefined) return this.#commit.poison
    const e = fromNative(err)
    // A sync inside the engine (a segment roll's msync) may have poisoned the log.
    if ((e as { code?: string }).code === 'ERR_SEGLOG_IO' && this.#engine.poisoned != null) this.#commit.fail(e as Error)
    return e
  }

  #refresh(): number {
    try {
      return this.#engine.refresh()
    } catch (err) {
      throw fromNative(err)
    }
  }

  #wakeTails(): void {
    const wakers = this.#tailWakers
    this.#tailWakers = []
    for (const wake of wakers) wake()
  }

  /**
   * Waits until a record at `next` may exist: the next local append, a reader's poll
   * finding one, the log closing or `signal` aborting.
   */
  #waitForRecords(next: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined
      let delay = 1
      const done = (): void => {
        if (timer !== undefined) clearTimeout(timer)
        timer = undefined
        signal?.removeEventListener('abort', done)
        const i = this.#tailWakers.indexOf(done)
        if (i >= 0) this.#tailWakers.splice(i, 1)
        resolve()
      }
      signal?.addEventListener('abort', done, { once: true })
      this.#tailWakers.push(done)
      if (this.#readOnly) {
        const poll = (): void => {
          timer = undefined
          let seen: number
          try {
            seen = this.#closed ? next + 1 : this.#engine.refresh()
          } catch {
            seen = next + 1 // the error surfaces on the read that follows
          }
          if (seen !== next) return done() // new records, or a truncation below `next`
          delay = Math.min(delay * 2, TAIL_POLL_MAX_MS)
          timer = setTimeout(poll, delay)
        }
        timer = setTimeout(poll, delay)
      }
    })
  }

  #encode(value: T): Uint8Array {
    const bytes = this.#codec.encode(value)
    if (!(bytes instanceof Uint8Array)) throw typeError('codec.encode must return a Uint8Array')
    return bytes
  }

  /** Decodes a value from the scratch buffer (which is reused, so custom codecs get a copy). */
  #decodeCopy(buf: Buffer, start: number, end: number): T {
    if (this.#fast) return this.#fast.decodeFrom(buf, start, end)
    return this.#codec.decode(Uint8Array.prototype.slice.call(buf, start, end))
  }

  #readInto(offset: number): number {
    try {
      return this.#js === undefined ? native.hotReadInto(this.#handle, offset, this.#scratch) : this.#js.readInto(offset, this.#scratch)
    } catch (err) {
      throw fromNative(err)
    }
  }

  /** Fetches frames into a fresh buffer (never reused, so values may point into it). */
  #fetch(from: number, maxRecords: number, maxBytes: number, size: number): [Buffer, number] {
    if (this.#closed) throw closedError()
    let buf = Buffer.allocUnsafeSlow(size)
    try {
      const js = this.#js
      let bytes = js === undefined ? native.hotReadBatchInto(this.#handle, from, maxRecords, maxBytes, buf) : js.readBatchInto(from, maxRecords, maxBytes, buf)
      if (bytes < 0) {
        buf = Buffer.allocUnsafeSlow(-bytes)
        bytes = js === undefined ? native.hotReadBatchInto(this.#handle, from, 1, -bytes, buf) : js.readBatchInto(from, 1, -bytes, buf)
      }
      return [buf, bytes]
    } catch (err) {
      throw fromNative(err)
    }
  }

  /**
   * Parses `bytes` of frames copied by the engine (already CRC-checked, dense offsets
   * from `offset`) into `out`; returns the offset after the last. Frames are 8-byte
   * aligned in `buf`, so header fields are read through a Uint32Array.
   */
  #parse(buf: Buffer, bytes: number, offset: number, out: LogRecord<T>[]): number {
    const ab = buf.buffer
    const base = buf.byteOffset
    const u32 = new Uint32Array(ab, base, bytes >>> 2)
    const raw = this.#raw
    const fast = this.#fast
    for (let p = 0; p < bytes; offset++) {
      const w = p >>> 2
      const len = u32[w + LEN_WORD]
      const start = p + FRAME_HEADER_LEN
      const value = raw
        ? (new Uint8Array(ab, base + start, len - FRAME_HEADER_LEN) as T)
        : fast
          ? fast.decodeFrom(buf, start, p + len)
          : this.#codec.decode(buf.subarray(start, p + len))
      out[out.length] = { offset, timestamp: u32[w + TS_WORD] + u32[w + TS_WORD + 1] * TWO_32, value }
      p += align8(len)
    }
    return offset
  }

  #range(options: ReadOptions): [number, number] {
    this.#check()
    if (options === null || typeof options !== 'object') throw typeError('options must be an object')
    // A reader's refresh also drops segments the writer removed: read firstOffset after it.
    const next = this.#readOnly ? this.#refresh() : this.#engine.nextOffset
    const first = this.#engine.firstOffset
    const { since, to = next } = options
    let { from = first } = options
    if (from instanceof Cursor) from = from.position
    if (since !== undefined) {
      if (options.from !== undefined) throw typeError('give either from or since, not both')
      from = this.offsetForTimestamp(since) ?? next
    }
    checkUint('from', from)
    checkUint('to', to)
    if (from < first) throw rangeError('ERR_SEGLOG_OFFSET_OUT_OF_RANGE', `from (${from}) is below firstOffset (${first})`)
    return [from, Math.min(to, next)]
  }
}

let warnedJsFallback = false

/** Once per process: the native addon could not be loaded, so the JS engine runs. */
function warnJsFallback(why: string): void {
  if (warnedJsFallback) return
  warnedJsFallback = true
  process.emitWarning(`seglog: the native addon cannot be loaded (${why}); using the pure-TypeScript engine (engine: 'js'), which is slower and lacks some features`, {
    code: 'SEGLOG_JS_FALLBACK',
    type: 'SeglogWarning',
  })
}

function readU64(buf: Buffer, at: number): number {
  return buf.readUInt32LE(at) + buf.readUInt32LE(at + 4) * TWO_32
}

function checkRaw(value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array)) throw typeError(`value must be a Uint8Array (raw codec), got ${value === null ? 'null' : typeof value}`)
  return value
}

function tooLarge(size: number, max: number): RangeError {
  return rangeError('ERR_SEGLOG_RECORD_TOO_LARGE', `record of ${size} bytes exceeds maxRecordBytes (${max})`)
}

function closedError(): Error {
  return seglogError('ERR_SEGLOG_CLOSED', 'the log is closed')
}

/** Read through a call so TypeScript does not narrow it across `await`/`yield`. */
function isAborted(signal: AbortSignal | undefined): boolean {
  return signal !== undefined && signal.aborted
}

function readOnlyError(): Error {
  return seglogError('ERR_SEGLOG_READ_ONLY', 'the log was opened read-only')
}

function nextPow2(n: number): number {
  let p = 4096
  while (p < n) p *= 2
  return p
}

/** napi-rs returns `null` for absent optional fields; the public types use `undefined`. */
function stripNulls<O extends object>(o: O): O {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(o)) if (v !== null && v !== undefined) out[k] = v
  return out as O
}

interface CursorOps {
  first(): number
  commit(offset: number): Promise<void>
  remove(): boolean
}

/** A named, durable consumer position (see `Log.cursor`). */
export class Cursor {
  readonly name: string
  #position: number | undefined
  #committedMs: number | undefined
  readonly #ops: CursorOps

  /** @internal Made by `Log.cursor`. */
  constructor(name: string, position: number | undefined, committedMs: number | undefined, ops: CursorOps) {
    this.name = name
    this.#position = position ?? undefined
    this.#committedMs = committedMs ?? undefined
    this.#ops = ops
  }

  /** The committed position (the next offset to consume), or `firstOffset` if never committed. */
  get position(): number {
    return this.#position ?? this.#ops.first()
  }

  /** Whether a position was ever committed (and not deleted). */
  get committed(): boolean {
    return this.#position !== undefined
  }

  get committedMs(): number | undefined {
    return this.#committedMs
  }

  /**
   * Durably records `offset` (at most `nextOffset`) as this cursor's position: temp file,
   * fsync, rename, fsync directory, on a libuv worker. A crash leaves the old or the new
   * position.
   */
  async commit(offset: number): Promise<void> {
    await this.#ops.commit(offset)
    this.#position = offset
    this.#committedMs = Date.now()
  }

  /** Removes the cursor durably. Returns whether it existed. */
  async delete(): Promise<boolean> {
    const existed = this.#ops.remove()
    this.#position = undefined
    this.#committedMs = undefined
    return existed
  }
}
