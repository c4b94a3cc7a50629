import { native, type NativeLog } from './native'
import { codecs, checkCodec, isFastCodec, type Codec, type FastCodec } from './codecs'
import { checkUint, fromNative, rangeError, seglogError, typeError } from './errors'

export interface LogOptions<T> {
  /** How values become bytes. Default: raw bytes (`Uint8Array` in, `Buffer` out). */
  codec?: Codec<T>
  /** Preallocated size of each segment file. Default 64 MiB. */
  segmentBytes?: number
  /** Bytes between sparse index entries. Default 4096. */
  indexIntervalBytes?: number
  /** Largest encoded value accepted. Default 16 MiB, and at most what fits in a segment. */
  maxRecordBytes?: number
}

export interface LogRecord<T> {
  offset: number
  /** Milliseconds since the Unix epoch: given to `append`, or the time of the append. */
  timestamp: number
  value: T
}

export interface ReadOptions {
  /** First offset to read (inclusive). Default: `firstOffset`. */
  from?: number
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

const align8 = (n: number): number => (n + 7) & ~7

/**
 * An append-only log in a directory. One writer per directory (others get
 * `ERR_SEGLOG_LOCKED`). Offsets are dense from 0.
 */
export class Log<T = Uint8Array> implements AsyncDisposable {
  readonly #native: NativeLog
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

  private constructor(nativeLog: NativeLog, codec: Codec<T>) {
    this.#native = nativeLog
    this.#handle = nativeLog.handle
    this.#codec = codec
    this.#fast = isFastCodec(codec) ? codec : undefined
    this.#raw = codec === (codecs.raw as Codec<unknown>)
    this.#maxRecordBytes = nativeLog.maxRecordBytes
    this.#recovery = nativeLog.recoveryReport() as RecoveryReport
  }

  /** Opens or creates the log in `dir`, recovering it after a crash (see `recovery`). */
  static async open<T = Uint8Array>(dir: string, options: LogOptions<T> = {}): Promise<Log<T>> {
    if (typeof dir !== 'string' || dir.length === 0) throw typeError('dir must be a non-empty string')
    if (options === null || typeof options !== 'object') throw typeError('options must be an object')
    const { codec = codecs.raw as unknown as Codec<T>, segmentBytes, indexIntervalBytes, maxRecordBytes } = options
    checkCodec<T>(codec)
    for (const [name, v] of [['segmentBytes', segmentBytes], ['indexIntervalBytes', indexIntervalBytes], ['maxRecordBytes', maxRecordBytes]] as const) {
      if (v !== undefined) checkUint(name, v)
    }
    let nativeLog: NativeLog
    try {
      nativeLog = native.NativeLog.open(dir, { segmentBytes, indexIntervalBytes, maxRecordBytes })
    } catch (err) {
      throw fromNative(err)
    }
    return new Log<T>(nativeLog, codec)
  }

  /** Offset of the oldest record still in the log. */
  get firstOffset(): number {
    this.#check()
    return this.#native.firstOffset
  }

  /** Offset the next appended record will get. */
  get nextOffset(): number {
    this.#check()
    return this.#native.nextOffset
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
    try {
      return native.hotAppend(this.#handle, bytes, timestamp)
    } catch (err) {
      throw fromNative(err)
    }
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
    if (n === 0) return this.#native.nextOffset
    const encoded: Uint8Array[] = this.#raw ? (values as unknown as Uint8Array[]) : values.map((v) => this.#encode(v))
    let total = 0
    for (let i = 0; i < n; i++) {
      const b = encoded[i]
      if (this.#raw) checkRaw(b)
      if (b.length > this.#maxRecordBytes) throw tooLarge(b.length, this.#maxRecordBytes)
      total += b.length
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
    try {
      return native.hotAppendPacked(this.#handle, staging.subarray(0, total), lengths.subarray(0, n), timestamp)
    } catch (err) {
      throw fromNative(err)
    }
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

  /** One entry per segment file, oldest first. */
  segments(): SegmentInfo[] {
    this.#check()
    return this.#native.segments().map((s) => stripNulls(s) as SegmentInfo)
  }

  /** Checks every segment, record (CRC, offsets) and index entry. */
  async verify(): Promise<VerifyReport> {
    this.#check()
    const r = this.#native.verify()
    return { ...r, problem: r.problem ? (stripNulls(r.problem) as VerifyProblem) : undefined }
  }

  /** Writes the index and releases the files and the writer lock. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#native.close()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  #check(): void {
    if (this.#closed) throw closedError()
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
      return native.hotReadInto(this.#handle, offset, this.#scratch)
    } catch (err) {
      throw fromNative(err)
    }
  }

  /** Fetches frames into a fresh buffer (never reused, so values may point into it). */
  #fetch(from: number, maxRecords: number, maxBytes: number, size: number): [Buffer, number] {
    if (this.#closed) throw closedError()
    let buf = Buffer.allocUnsafeSlow(size)
    try {
      let bytes = native.hotReadBatchInto(this.#handle, from, maxRecords, maxBytes, buf)
      if (bytes < 0) {
        buf = Buffer.allocUnsafeSlow(-bytes)
        bytes = native.hotReadBatchInto(this.#handle, from, 1, -bytes, buf)
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
    const first = this.#native.firstOffset
    const next = this.#native.nextOffset
    const { from = first, to = next } = options
    checkUint('from', from)
    checkUint('to', to)
    if (from < first) throw rangeError('ERR_SEGLOG_OFFSET_OUT_OF_RANGE', `from (${from}) is below firstOffset (${first})`)
    return [from, Math.min(to, next)]
  }
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
