import { fromNative, fromOutcome, rangeError } from './errors'

/**
 * How durable an appended record is before `sync()` / `appendDurable()` say more:
 * - `'none'`: in the OS page cache at once. Survives a crash of the process (kill -9,
 *   an exception), not a crash of the machine (power loss, kernel panic).
 * - `'interval'` (default): also synced in the background every `syncIntervalMs`
 *   (default 100) and/or every `syncIntervalBytes`: a machine crash loses at most
 *   about one interval of records.
 * - `'sync'`: every append starts a group-commit sync at once; `appendDurable()` and
 *   `sync()` resolve when the record is on stable storage.
 */
export type Durability = 'none' | 'interval' | 'sync'

/** What a native sync task resolves with: the new durable offset, or why it failed. */
export interface SyncOutcome {
  durable?: number | null
  code?: string | null
  message?: string | null
}

/** A caller waiting for records below `until` to be durable. */
interface Waiter {
  until: number
  value: number | undefined
  resolve: (value: number | undefined) => void
  reject: (err: unknown) => void
}

const NONE = 0
const INTERVAL = 1
const SYNC = 2

/**
 * Durability modes and group commit for one writer (a `Log` or a `Store`): at most one
 * sync in flight. A request made while one runs is noted and served by the next sync,
 * which starts when the current one ends and covers everything appended by then;
 * otherwise the sync starts at the end of the current tick, so every append of this
 * tick rides on it. One native Promise per sync, never per record; waiters are settled
 * here, in offset order. A failed sync poisons the writer: every waiter and every later
 * write gets the error.
 */
export class GroupCommit {
  readonly #sync: () => Promise<SyncOutcome>
  readonly #mode: number
  readonly #syncBytes: number
  #timer: NodeJS.Timeout | undefined
  /** Records below this offset are durable. */
  #durable: number
  #pendingBytes = 0
  /** Callers waiting for durability, in `until` order (offsets only grow). */
  #waiters: Waiter[] = []
  #waitHead = 0
  /** A sync is wanted: it starts at the end of this tick, or when the one in flight ends. */
  #wantSync = false
  #inFlight: Promise<void> | undefined
  #poison: Error | undefined
  #stopped = false
  #syncs = 0
  #lastSyncMs = 0

  /**
   * `sync` starts one native sync (on a libuv worker). `durability` undefined means a
   * reader: nothing is ever synced.
   */
  constructor(sync: () => Promise<SyncOutcome>, durable: number, durability: Durability | undefined, syncIntervalMs: number, syncIntervalBytes: number | undefined) {
    this.#sync = sync
    this.#durable = durable
    this.#mode = durability === 'sync' ? SYNC : durability === 'interval' ? INTERVAL : NONE
    this.#syncBytes = this.#mode === INTERVAL && syncIntervalBytes !== undefined ? syncIntervalBytes : Infinity
    if (this.#mode === INTERVAL) {
      this.#timer = setInterval(() => {
        if (this.#pendingBytes > 0) this.#requestSync()
      }, syncIntervalMs)
      this.#timer.unref()
    }
  }

  /** Records below this offset are known to be on stable storage. */
  get durable(): number {
    return this.#durable
  }

  /** The error that poisoned the writer, if a sync failed. */
  get poison(): Error | undefined {
    return this.#poison
  }

  get syncs(): number {
    return this.#syncs
  }

  get lastSyncMs(): number {
    return this.#lastSyncMs
  }

  /** After an append of `bytes`: in 'sync' mode a sync follows; in 'interval' mode once enough bytes wait. */
  appended(bytes: number): void {
    if (this.#mode === SYNC) this.#requestSync()
    else if ((this.#pendingBytes += bytes) >= this.#syncBytes) this.#requestSync()
  }

  /** Resolves with `value` once records below `until` are durable. */
  whenDurable(until: number, value: number | undefined): Promise<number | undefined> {
    if (this.#poison !== undefined) return Promise.reject(this.#poison)
    if (until <= this.#durable) return Promise.resolve(value)
    return new Promise((resolve, reject) => {
      this.#waiters.push({ until, value, resolve, reject })
      this.#requestSync()
    })
  }

  /** Resolves when no sync is in flight (none may run while the engine truncates or closes). */
  async idle(): Promise<void> {
    while (this.#inFlight !== undefined) await this.#inFlight
  }

  /** Stops the interval timer and starts no more syncs (close). */
  stop(): void {
    this.#stopped = true
    if (this.#timer !== undefined) clearInterval(this.#timer)
    this.#timer = undefined
  }

  /** Records below `durable` are on stable storage (a close synced them): resolves their waiters. */
  settle(durable: number): void {
    if (durable > this.#durable) this.#durable = durable
    const w = this.#waiters
    let i = this.#waitHead
    while (i < w.length && w[i].until <= durable) {
      w[i].resolve(w[i].value)
      i++
    }
    if (i === w.length) {
      w.length = 0
      i = 0
    } else if (i > 1024 && i > w.length >>> 1) {
      w.splice(0, i)
      i = 0
    }
    this.#waitHead = i
    // Still waiting (it came in after the sync started): make sure another sync follows.
    if (i < w.length) this.#requestSync()
  }

  /** A sync failed: the writer is poisoned; every waiter and every later write gets `err`. */
  fail(err: Error): void {
    if (this.#poison === undefined) this.#poison = err
    const w = this.#waiters
    for (let i = this.#waitHead; i < w.length; i++) w[i].reject(this.#poison)
    w.length = 0
    this.#waitHead = 0
  }

  /**
   * A truncation left the log ending at `end`: the durable offset cannot exceed it, and
   * the waiters for removed records (they come last: `until` grows) are rejected.
   */
  truncated(end: number, rejectAbove: boolean): void {
    if (end < this.#durable) this.#durable = end
    if (!rejectAbove) return
    const w = this.#waiters
    while (w.length > this.#waitHead && w[w.length - 1].until > end) {
      const waiter = w.pop() as Waiter
      waiter.reject(rangeError('ERR_SEGLOG_OFFSET_OUT_OF_RANGE', `the record was removed by truncate(${end}) before it was durable`))
    }
  }

  #requestSync(): void {
    if (this.#wantSync) return
    this.#wantSync = true
    if (this.#inFlight === undefined) queueMicrotask(this.#startSync)
  }

  readonly #startSync = (): void => {
    if (this.#inFlight !== undefined || !this.#wantSync || this.#stopped || this.#poison !== undefined) return
    this.#wantSync = false
    this.#pendingBytes = 0
    let pending: Promise<SyncOutcome>
    try {
      pending = this.#sync()
    } catch (err) {
      this.fail(fromNative(err) as Error)
      return
    }
    const started = performance.now()
    this.#inFlight = pending.then(
      (outcome) => {
        this.#inFlight = undefined
        this.#syncs++
        this.#lastSyncMs = performance.now() - started
        if (typeof outcome.durable === 'number') this.settle(outcome.durable)
        else this.fail(fromOutcome(outcome.code ?? 'ERR_SEGLOG_IO', outcome.message ?? 'sync failed'))
        if (this.#wantSync) this.#startSync()
      },
      (err) => {
        this.#inFlight = undefined
        this.fail(fromNative(err) as Error)
      },
    )
  }
}
