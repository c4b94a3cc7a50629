// Loads the native addon inside a try/catch instead of a static import: a missing or
// broken binary (an unsupported platform, a failed build) must not make
// `require('seglog')` throw, because the pure-TypeScript engine (ts/js) can take over.
// The attempt is made once, when this module is first evaluated, so `native` is set
// (when loadable) for every module that reads it; `Log.open` decides what to do when not.
import type * as binding from '../native/binding.js'
import type { NativeCursor, NativeRecoveryReport, NativeRemovedSegment, NativeSegmentInfo, NativeSyncOutcome, NativeTruncateReport, NativeVerifyReport } from '../native/binding.js'

/** Hot-path functions registered as raw N-API callbacks (crates/seglog-node/src/hot.rs). */
interface HotPath {
  hotAppend(handle: number, payload: Uint8Array, timestamp?: number): number
  hotAppendPacked(handle: number, data: Uint8Array, lengths: Uint32Array, timestamp?: number): number
  hotReadInto(handle: number, offset: number, dest: Uint8Array): number
  hotReadBatchInto(handle: number, from: number, maxRecords: number, maxBytes: number, dest: Uint8Array): number
}

export type NativeLog = binding.NativeLog
export type NativeBinding = typeof binding & HotPath

/**
 * What `Log` drives besides the hot path: the native `NativeLog`, or the JS engine's
 * `JsLog`, which has the same shape (and its own append/read methods for the hot path).
 */
export interface LogBackend {
  readonly handle: number
  readonly firstOffset: number
  readonly nextOffset: number
  readonly maxRecordBytes: number
  readonly readOnly: boolean
  readonly durableOffset: number
  readonly poisoned: string | null
  readonly retentionError: string | null
  recoveryReport(): NativeRecoveryReport
  sync(): Promise<NativeSyncOutcome>
  refresh(): number
  deleteBefore(offset: number): NativeRemovedSegment[]
  enforceRetention(): NativeRemovedSegment[]
  truncate(nextOffset: number): NativeTruncateReport
  offsetForTimestamp(timestamp: number): number | null
  cursor(name: string): NativeCursor | null
  cursors(): NativeCursor[]
  commitCursor(name: string, position: number): Promise<NativeSyncOutcome>
  deleteCursor(name: string): boolean
  segments(): NativeSegmentInfo[]
  verify(): NativeVerifyReport
  close(): void
}

/** The loaded binding. Undefined until `loadNative()` succeeded (never read before). */
export let native: NativeBinding = undefined as unknown as NativeBinding
let attempted = false
let loadError: Error | undefined

/** Loads the addon once; returns it, or undefined if it cannot be loaded (see `nativeLoadError`). */
export function loadNative(): NativeBinding | undefined {
  if (!attempted) {
    attempted = true
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      native = require('../native/binding.js') as NativeBinding
    } catch (err) {
      loadError = err instanceof Error ? err : new Error(String(err))
    }
  }
  return loadError === undefined ? native : undefined
}

loadNative()

/** Why the addon could not be loaded, after `loadNative()` returned undefined. */
export function nativeLoadError(): Error | undefined {
  return loadError
}
