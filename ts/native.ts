import * as binding from '../native/binding.js'

/** Hot-path functions registered as raw N-API callbacks (crates/seglog-node/src/hot.rs). */
interface HotPath {
  hotAppend(handle: number, payload: Uint8Array, timestamp?: number): number
  hotAppendPacked(handle: number, data: Uint8Array, lengths: Uint32Array, timestamp?: number): number
  hotReadInto(handle: number, offset: number, dest: Uint8Array): number
  hotReadBatchInto(handle: number, from: number, maxRecords: number, maxBytes: number, dest: Uint8Array): number
}

export type NativeLog = binding.NativeLog
export const native = binding as typeof binding & HotPath
