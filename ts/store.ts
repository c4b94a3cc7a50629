import { setImmediate as nextMacrotask } from 'node:timers/promises'

import { loadNative, native, nativeLoadError } from './native'
import { codecs, checkCodec, isFastCodec, type Codec, type FastCodec } from './codecs'
import { checkUint, fromNative, fromOutcome, rangeError, seglogError, typeError, type SeglogError } from './errors'
import { GroupCommit, type Durability } from './group-commit'

/** A store key: a string (1 to 1024 bytes of UTF-8) or a safe non-negative integer. `1` and `'1'` are different keys. */
export type StoreKey = string | number

export interface StoreOptions<V> {
  /** How values become bytes. Default: raw bytes (`Uint8Array` in, `Buffer` out). */
  codec?: Codec<V>
  /** As for `Log` (default `'interval'`). In `'sync'` mode every write starts a group-commit sync. */
  durability?: Durability
  syncIntervalMs?: number
  syncIntervalBytes?: number
  /** Size of each log segment file (default 64 MiB). */
  segmentBytes?: number
  /** Largest record: 4 bytes + key + value (default 16 MiB). */
  maxRecordBytes?: number
  /**
   * Take a snapshot of the index in the background after this many bytes of log were
   * written since the last one (default 64 MiB; 0 turns automatic snapshots off).
   */
  snapshotEveryBytes?: number
  /** Bytes of old records compaction looks at per step (default 1 MiB): bounds the pause a step causes. */
  compactionStepBytes?: number
}

export interface SnapshotResult {
  /** Records below this log offset are covered. */
  position: number
  path: string
}

export interface CompactResult {
  recordsCopied: number
  bytesCopied: number
  recordsDropped: number
  segmentsRemoved: number
  /** Bytes of segment files removed. */
  bytesReclaimed: number
  durationMs: number
}

export interface StoreStats {
  keys: number
  /** Bytes of the live records (the latest PUT of each key, framed). */
  liveBytes: number
  /** Bytes of records in the log, live or not. */
  logBytes: number
  /** `logBytes - liveBytes`: what compaction would reclaim. */
  garbageBytes: number
  /** Size of the segment files (preallocated) plus snapshots. */
  fileBytes: number
  segments: number
  firstOffset: number
  nextOffset: number
  durability: { mode: Durability; durableOffset: number; syncs: number; lastSyncMs: number; poisoned?: string }
  snapshot: {
    /** The snapshot loaded at open, if any. */
    loaded?: string
    replayedFrom: number
    recordsReplayed: number
    openMs: number
    /** Position of the newest snapshot written or loaded. */
    lastPosition?: number
    bytesSinceLast: number
    /** The last automatic snapshot's error, if it failed. */
    lastError?: string
  }
  /** Snapshots that failed their checks at open and were skipped (the store opened from an older one or the log). */
  warnings: string[]
  /** Set while a compaction runs: records below `end` are being compacted, `next` is the next one looked at. */
  compaction?: { end: number; next: number }
  lastCompaction?: CompactResult
}

interface StoreHotPath {
  hotStorePut(handle: number, key: StoreKey, value: Uint8Array): number
  hotStoreGet(handle: number, key: StoreKey, dest: Uint8Array): number
  hotStoreHas(handle: number, key: StoreKey): number
  hotStoreDelete(handle: number, key: StoreKey): number
}

type NativeStore = InstanceType<typeof native.NativeStore>

const DEFAULT_SYNC_INTERVAL_MS = 100
const DEFAULT_SNAPSHOT_EVERY_BYTES = 64 << 20
const DEFAULT_COMPACTION_STEP_BYTES = 1 << 20
/** A close snapshots when at least this much was written since the last snapshot. */
const CLOSE_SNAPSHOT_BYTES = 1 << 20
const RECORD_HEADER = 4
/** Framing of a record in the log: 28-byte header, padded to 8 (an upper bound). */
const FRAME_OVERHEAD = 36

/**
 * A key-value store kept in a seglog log (docs/FORMAT.md 10): every put and delete is a
 * CRC-framed log record, the index (key -> record) lives in native memory, snapshots of
 * it make opening fast, and `compact()` reclaims the space of overwritten and deleted
 * keys. One writer per directory.
 */
export class Store<V = Uint8Array> implements AsyncDisposable {
  readonly #native: NativeStore
  readonly #hot: StoreHotPath
  readonly #handle: number
  readonly #codec: Codec<V>
  readonly #fast: FastCodec<V> | undefined
  readonly #raw: boolean
  readonly #maxRecordBytes: number
  readonly #durability: Durability
  readonly #commit: GroupCommit
  readonly #snapshotEvery: number
  readonly #stepBytes: number
  readonly #openMs: number
  #scratch: Buffer = Buffer.allocUnsafeSlow(4096)
  #closed = false
  /** Approximate log bytes written since the last snapshot (drives automatic snapshots). */
  #sinceSnapshot = 0
  /** Snapshots and compactions run one at a time, in this chain. */
  #maintenance: Promise<unknown> = Promise.resolve()
  #maintaining = false
  #autoQueued = false
  #autoSnapshotError: string | undefined
  #lastCompaction: CompactResult | undefined

  private constructor(nativeStore: NativeStore, codec: Codec<V>, durability: Durability, options: { syncIntervalMs: number; syncIntervalBytes?: number; snapshotEveryBytes: number; compactionStepBytes: number; openMs: number }) {
    this.#native = nativeStore
    this.#hot = native as unknown as StoreHotPath
    this.#handle = nativeStore.handle
    this.#codec = codec
    this.#fast = isFastCodec(codec) ? codec : undefined
    this.#raw = codec === (codecs.raw as Codec<unknown>)
    this.#maxRecordBytes = nativeStore.maxRecordBytes
    this.#durability = durability
    this.#commit = new GroupCommit(() => nativeStore.sync(), nativeStore.durableOffset, durability, options.syncIntervalMs, options.syncIntervalBytes)
    this.#snapshotEvery = options.snapshotEveryBytes
    this.#stepBytes = options.compactionStepBytes
    this.#openMs = options.openMs
    this.#sinceSnapshot = nativeStore.stats().bytesSinceSnapshot
  }

  /**
   * Opens or creates the store in `dir`: recovers the log, loads the newest valid
   * snapshot and replays the records after it.
   */
  static async open<V = Uint8Array>(dir: string, options: StoreOptions<V> = {}): Promise<Store<V>> {
    if (typeof dir !== 'string' || dir.length === 0) throw typeError('dir must be a non-empty string')
    if (options === null || typeof options !== 'object') throw typeError('options must be an object')
    const {
      codec = codecs.raw as unknown as Codec<V>,
      durability = 'interval',
      syncIntervalMs = DEFAULT_SYNC_INTERVAL_MS,
      syncIntervalBytes,
      segmentBytes,
      maxRecordBytes,
      snapshotEveryBytes = DEFAULT_SNAPSHOT_EVERY_BYTES,
      compactionStepBytes = DEFAULT_COMPACTION_STEP_BYTES,
    } = options
    checkCodec<V>(codec)
    for (const [name, v] of [
      ['syncIntervalMs', syncIntervalMs],
      ['syncIntervalBytes', syncIntervalBytes],
      ['segmentBytes', segmentBytes],
      ['maxRecordBytes', maxRecordBytes],
      ['snapshotEveryBytes', snapshotEveryBytes],
      ['compactionStepBytes', compactionStepBytes],
    ] as const) {
      if (v !== undefined) checkUint(name, v)
    }
    if (syncIntervalMs < 1 || syncIntervalMs > 0x7fffffff) {
      throw rangeError('ERR_SEGLOG_INVALID_ARGUMENT', `syncIntervalMs must be between 1 and 2^31-1, got ${syncIntervalMs}`)
    }
    if (syncIntervalBytes === 0) throw rangeError('ERR_SEGLOG_INVALID_ARGUMENT', 'syncIntervalBytes must be at least 1')
    if (compactionStepBytes === 0) throw rangeError('ERR_SEGLOG_INVALID_ARGUMENT', 'compactionStepBytes must be at least 1')
    if (durability !== 'none' && durability !== 'interval' && durability !== 'sync') {
      if (typeof durability !== 'string') throw typeError(`durability must be a string, got ${typeof durability}`)
      throw rangeError('ERR_SEGLOG_INVALID_ARGUMENT', `durability must be 'none', 'interval' or 'sync', got '${durability}'`)
    }
    if (loadNative() === undefined) {
      throw seglogError('ERR_SEGLOG_UNSUPPORTED', `Store needs the native engine, which could not be loaded on this platform (engine: 'js' has no store): ${nativeLoadError()?.message}`)
    }
    const started = performance.now()
    let nativeStore: NativeStore
    try {
      nativeStore = native.NativeStore.open(dir, { segmentBytes, maxRecordBytes, frequentSyncs: durability === 'sync' })
    } catch (err) {
      throw fromNative(err)
    }
    const openMs = performance.now() - started
    return new Store<V>(nativeStore, codec, durability, { syncIntervalMs, syncIntervalBytes, snapshotEveryBytes, compactionStepBytes, openMs })
  }

  /** Number of keys. */
  get size(): number {
    this.#check()
    return this.#native.size
  }

  get closed(): boolean {
    return this.#closed
  }

  get durability(): Durability {
    return this.#durability
  }

  /** Writes below this log offset are on stable storage. */
  get durableOffset(): number {
    return this.#commit.durable
  }

  /** The value stored under `key`, or `undefined`. The record's CRC is checked first. */
  get(key: StoreKey): V | undefined {
    this.#check()
    checkKey(key)
    let n = this.#getInto(key)
    if (n < -1) {
      this.#scratch = Buffer.allocUnsafeSlow(nextPow2(-n - 2))
      n = this.#getInto(key)
    }
    if (n === -1) return undefined
    if (this.#fast !== undefined) return this.#fast.decodeFrom(this.#scratch, 0, n)
    return this.#codec.decode(Uint8Array.prototype.slice.call(this.#scratch, 0, n))
  }

  has(key: StoreKey): boolean {
    this.#check()
    checkKey(key)
    try {
      return this.#hot.hotStoreHas(this.#handle, key) === 1
    } catch (err) {
      throw storeError(err)
    }
  }

  /** Sets `key` to `value`; visible to `get` at once, durable per the durability mode. */
  put(key: StoreKey, value: V): void {
    this.#checkWritable()
    checkKey(key)
    const bytes = this.#encode(value)
    this.#checkSize(key, bytes.length)
    try {
      this.#hot.hotStorePut(this.#handle, key, bytes)
    } catch (err) {
      throw this.#writeError(err)
    }
    this.#written(bytes.length + keyLength(key))
  }

  /** `put`, resolving once the write is on stable storage (group commit). */
  putDurable(key: StoreKey, value: V): Promise<void> {
    try {
      this.put(key, value)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#whenDurable()
  }

  /** Removes `key`; returns whether it existed (nothing is written if it did not). */
  delete(key: StoreKey): boolean {
    this.#checkWritable()
    checkKey(key)
    let existed: boolean
    try {
      existed = this.#hot.hotStoreDelete(this.#handle, key) === 1
    } catch (err) {
      throw this.#writeError(err)
    }
    if (existed) this.#written(keyLength(key))
    return existed
  }

  /** `delete`, resolving once the removal is on stable storage. */
  deleteDurable(key: StoreKey): Promise<boolean> {
    let existed: boolean
    try {
      existed = this.delete(key)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#whenDurable().then(() => existed)
  }

  /**
   * Sets every entry, atomically: after a crash either all of them are there or none.
   * Later entries win over earlier ones with the same key. Every key and value is
   * checked before anything is written. The batch must fit in one segment.
   */
  putBatch(entries: Iterable<readonly [StoreKey, V]>): void {
    this.#checkWritable()
    if (entries === null || typeof (entries as Iterable<unknown>)?.[Symbol.iterator] !== 'function') {
      throw typeError('putBatch takes an iterable of [key, value] pairs')
    }
    const keys: StoreKey[] = []
    const values: Uint8Array[] = []
    let bytes = 0
    for (const entry of entries) {
      if (!Array.isArray(entry) || entry.length !== 2) throw typeError('putBatch takes an iterable of [key, value] pairs')
      const [key, value] = entry as [StoreKey, V]
      checkKey(key)
      // (get/put check this in the engine; the batch's keys cross N-API as UTF-8.)
      if (typeof key === 'string' && !(key as unknown as { isWellFormed(): boolean }).isWellFormed()) {
        throw rangeError('ERR_SEGLOG_INVALID_ARGUMENT', 'a string key must be well-formed UTF-16 (it has a lone surrogate)')
      }
      const encoded = this.#encode(value)
      this.#checkSize(key, encoded.length)
      keys.push(key)
      values.push(encoded)
      bytes += encoded.length + keyLength(key)
    }
    if (keys.length === 0) return
    try {
      this.#native.putBatch(keys, values)
    } catch (err) {
      throw this.#writeError(err)
    }
    this.#written(bytes)
  }

  /** `putBatch`, resolving once the whole batch is on stable storage. */
  putBatchDurable(entries: Iterable<readonly [StoreKey, V]>): Promise<void> {
    try {
      this.putBatch(entries)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#whenDurable()
  }

  /** Every key, as of the call (log order of their latest write). */
  keys(): IterableIterator<StoreKey> {
    this.#check()
    try {
      return this.#native.keys()[Symbol.iterator]()
    } catch (err) {
      throw fromNative(err)
    }
  }

  /**
   * `[key, value]` for every key present when the call was made and still present when
   * its turn comes (values are read then). Yields to the event loop every 1024 entries.
   */
  async *entries(): AsyncGenerator<[StoreKey, V], void, undefined> {
    const keys = [...this.keys()]
    for (let i = 0; i < keys.length; i++) {
      if ((i & 1023) === 1023) await nextMacrotask()
      const value = this.get(keys[i])
      if (value !== undefined) yield [keys[i], value]
    }
  }

  [Symbol.asyncIterator](): AsyncGenerator<[StoreKey, V], void, undefined> {
    return this.entries()
  }

  /** Resolves once every write made before the call is on stable storage (group commit). */
  sync(): Promise<void> {
    if (this.#closed) return Promise.reject(closedError())
    return this.#whenDurable()
  }

  /**
   * Writes a snapshot of the index (after syncing the log up to it), so the next open
   * replays only what comes after. The index is copied on this thread (about 24 bytes
   * per key); the sync and the file write run on a libuv worker.
   */
  snapshot(): Promise<SnapshotResult> {
    return this.#exclusive(() => this.#snapshot())
  }

  async #snapshot(): Promise<SnapshotResult> {
    this.#checkWritable()
    const before = this.#sinceSnapshot
    this.#sinceSnapshot = 0
    let outcome
    try {
      outcome = await this.#native.snapshot()
    } catch (err) {
      this.#sinceSnapshot += before
      throw this.#writeError(err)
    }
    return this.#snapshotOutcome(outcome, before)
  }

  #snapshotOutcome(outcome: { position?: number | null; path?: string | null; code?: string | null; message?: string | null }, before: number): SnapshotResult {
    if (typeof outcome.position !== 'number' || typeof outcome.path !== 'string') {
      this.#sinceSnapshot += before
      const err = fromOutcome(outcome.code ?? 'ERR_SEGLOG_IO', outcome.message ?? 'snapshot failed')
      this.#noticePoison(err)
      throw err
    }
    return { position: outcome.position, path: outcome.path }
  }

  /**
   * Reclaims the space of overwritten and deleted keys: copies the live records of
   * every sealed segment to the end of the log, in steps of `compactionStepBytes`
   * between which the event loop runs (so `get`/`put` wait at most one step), syncs,
   * removes the old segments and writes a fresh snapshot. A crash at any point leaves a
   * store that opens to the same contents (docs/FORMAT.md 10.4).
   */
  compact(): Promise<CompactResult> {
    return this.#exclusive(async () => {
      this.#checkWritable()
      const started = performance.now()
      let progress = this.#write(() => this.#native.beginCompaction())
      try {
        while (!progress.done) {
          await nextMacrotask()
          this.#checkWritable()
          progress = this.#write(() => this.#native.compactStep(this.#stepBytes))
        }
        // The copies must be durable before the originals go: sync off the event loop
        // first, so the engine's own sync in finishCompaction finds little left.
        await this.#whenDurable()
        this.#checkWritable()
        const report = this.#write(() => this.#native.finishCompaction())
        const before = this.#sinceSnapshot
        this.#sinceSnapshot = 0
        let outcome
        try {
          outcome = await this.#native.compactionSnapshot()
        } catch (err) {
          this.#sinceSnapshot += before
          throw this.#writeError(err)
        }
        this.#snapshotOutcome(outcome, before)
        const result: CompactResult = {
          recordsCopied: report.recordsCopied,
          bytesCopied: report.bytesCopied,
          recordsDropped: report.recordsDropped,
          segmentsRemoved: report.segmentsRemoved.length,
          bytesReclaimed: report.segmentsRemoved.reduce((n, s) => n + s.fileBytes, 0),
          durationMs: performance.now() - started,
        }
        this.#lastCompaction = result
        return result
      } catch (err) {
        // Also when closing (close waits for this before it closes the engine), so
        // close's snapshot is not refused as "during a compaction".
        try {
          this.#native.abortCompaction()
        } catch {
          // the engine is closed
        }
        throw err
      }
    })
  }

  stats(): StoreStats {
    this.#check()
    const s = this.#call(() => this.#native.stats())
    const open = this.#call(() => this.#native.openReport())
    const commit = this.#commit
    return {
      keys: s.keys,
      liveBytes: s.liveBytes,
      logBytes: s.logBytes,
      garbageBytes: Math.max(0, s.logBytes - s.liveBytes),
      fileBytes: s.fileBytes,
      segments: s.segments,
      firstOffset: s.firstOffset,
      nextOffset: s.nextOffset,
      durability: stripUndefined({
        mode: this.#durability,
        durableOffset: commit.durable,
        syncs: commit.syncs,
        lastSyncMs: commit.lastSyncMs,
        poisoned: commit.poison?.message ?? s.poisoned ?? undefined,
      }),
      snapshot: stripUndefined({
        loaded: open.snapshot ?? undefined,
        replayedFrom: open.replayedFrom,
        recordsReplayed: open.recordsReplayed,
        openMs: this.#openMs,
        lastPosition: s.lastSnapshot ?? undefined,
        bytesSinceLast: s.bytesSinceSnapshot,
        lastError: this.#autoSnapshotError,
      }),
      warnings: open.warnings,
      ...(s.compaction ? { compaction: { end: s.compaction.end, next: s.compaction.next } } : {}),
      ...(this.#lastCompaction ? { lastCompaction: this.#lastCompaction } : {}),
    }
  }

  /**
   * Waits for a running snapshot (a running compaction is abandoned: the copies it made
   * are valid records), syncs every write, snapshots if much was written since the last
   * snapshot, and releases the files and the lock. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    // A running compaction notices at its next step and stops.
    const pending = this.#maintenance
    this.#closed = true
    await pending.catch(() => undefined)
    this.#commit.stop()
    await this.#commit.idle()
    if (this.#commit.poison === undefined && this.#sinceSnapshot >= CLOSE_SNAPSHOT_BYTES && this.#snapshotEvery > 0) {
      try {
        const outcome = await this.#native.snapshot()
        if (typeof outcome.position !== 'number') this.#noticePoison(fromOutcome(outcome.code ?? 'ERR_SEGLOG_IO', outcome.message ?? 'snapshot failed'))
      } catch (err) {
        this.#noticePoison(fromNative(err) as Error)
      }
    }
    const next = this.#native.nextOffset
    try {
      this.#native.close()
    } catch (err) {
      const e = fromNative(err) as Error
      this.#commit.fail(e)
      throw e
    }
    if (this.#commit.poison === undefined) this.#commit.settle(next)
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  // ---- internals ----

  #getInto(key: StoreKey): number {
    try {
      return this.#hot.hotStoreGet(this.#handle, key, this.#scratch)
    } catch (err) {
      throw storeError(err)
    }
  }

  #encode(value: V): Uint8Array {
    if (this.#raw) {
      if (!(value instanceof Uint8Array)) throw typeError(`value must be a Uint8Array (raw codec), got ${value === null ? 'null' : typeof value}`)
      return value
    }
    const bytes = this.#codec.encode(value)
    if (!(bytes instanceof Uint8Array)) throw typeError('codec.encode must return a Uint8Array')
    return bytes
  }

  #checkSize(key: StoreKey, valueBytes: number): void {
    // An exact check only when it could matter (string keys need their UTF-8 length).
    const max = this.#maxRecordBytes
    if (valueBytes + RECORD_HEADER + (typeof key === 'string' ? key.length * 3 : 8) <= max) return
    const size = valueBytes + RECORD_HEADER + (typeof key === 'string' ? Buffer.byteLength(key, 'utf8') : 8)
    if (size > max) throw rangeError('ERR_SEGLOG_RECORD_TOO_LARGE', `key and value make a record of ${size} bytes, above maxRecordBytes (${max})`)
  }

  #written(bytes: number): void {
    const framed = bytes + RECORD_HEADER + FRAME_OVERHEAD
    this.#commit.appended(framed)
    this.#sinceSnapshot += framed
    if (this.#snapshotEvery > 0 && this.#sinceSnapshot >= this.#snapshotEvery && !this.#maintaining && !this.#autoQueued) this.#autoSnapshot()
  }

  #autoSnapshot(): void {
    // Queued once: the writes that follow in this tick must not queue more.
    this.#autoQueued = true
    void this.#exclusive(async () => {
      this.#autoQueued = false
      if (this.#closed || this.#commit.poison !== undefined || this.#sinceSnapshot < this.#snapshotEvery) return
      try {
        await this.#snapshot()
        this.#autoSnapshotError = undefined
      } catch (err) {
        this.#autoSnapshotError = (err as Error).message
      }
    }).catch(() => undefined)
  }

  /** Runs `f` after every snapshot and compaction queued before it. */
  #exclusive<R>(f: () => Promise<R>): Promise<R> {
    const run = async (): Promise<R> => {
      this.#maintaining = true
      try {
        return await f()
      } finally {
        this.#maintaining = false
      }
    }
    const result = this.#maintenance.then(run, run)
    this.#maintenance = result.catch(() => undefined)
    return result
  }

  #whenDurable(): Promise<void> {
    if (this.#closed) return Promise.reject(closedError())
    return this.#commit.whenDurable(this.#native.nextOffset, undefined) as Promise<unknown> as Promise<void>
  }

  #check(): void {
    if (this.#closed) throw closedError()
  }

  #checkWritable(): void {
    if (this.#closed) throw closedError()
    if (this.#commit.poison !== undefined) throw this.#commit.poison
  }

  #call<R>(f: () => R): R {
    try {
      return f()
    } catch (err) {
      throw storeError(err)
    }
  }

  #write<R>(f: () => R): R {
    try {
      return f()
    } catch (err) {
      throw this.#writeError(err)
    }
  }

  #writeError(err: unknown): unknown {
    if (this.#commit.poison !== undefined) return this.#commit.poison
    const e = storeError(err)
    this.#noticePoison(e as Error)
    return e
  }

  /** A sync inside the engine (a segment roll, a snapshot) may have poisoned the log. */
  #noticePoison(e: Error): void {
    if ((e as SeglogError).code !== 'ERR_SEGLOG_IO') return
    let poisoned: string | null | undefined
    try {
      poisoned = this.#native.poisoned
    } catch {
      return
    }
    if (poisoned != null) this.#commit.fail(e)
  }
}

function checkKey(key: unknown): asserts key is StoreKey {
  if (typeof key === 'string') {
    if (key.length === 0) throw rangeError('ERR_SEGLOG_INVALID_ARGUMENT', 'a string key must not be empty')
    // Longer than 1024 bytes of UTF-8, or not well-formed UTF-16 (a lone surrogate has no
    // UTF-8 form), is refused by the engine, which encodes the key.
    return
  }
  if (typeof key === 'number') {
    if (!Number.isSafeInteger(key) || key < 0) {
      throw rangeError('ERR_SEGLOG_INVALID_ARGUMENT', `a number key must be a safe non-negative integer, got ${key}`)
    }
    return
  }
  throw typeError(`key must be a string or a safe non-negative integer, got ${key === null ? 'null' : typeof key}`)
}

function keyLength(key: StoreKey): number {
  return typeof key === 'string' ? key.length : 8
}

/** Engine errors about bad values (a key too long, a record too large) become RangeErrors. */
function storeError(err: unknown): unknown {
  const e = fromNative(err)
  if (e instanceof Error && !(e instanceof RangeError)) {
    const code = (e as SeglogError).code
    if (code === 'ERR_SEGLOG_RECORD_TOO_LARGE' || code === 'ERR_SEGLOG_BATCH_TOO_LARGE') return rangeError(code, e.message)
  }
  return e
}

function closedError(): Error {
  return seglogError('ERR_SEGLOG_CLOSED', 'the store is closed')
}

function nextPow2(n: number): number {
  let p = 4096
  while (p < n) p *= 2
  return p
}

function stripUndefined<O extends object>(o: O): O {
  for (const k of Object.keys(o) as (keyof O)[]) if (o[k] === undefined) delete o[k]
  return o
}
