// Byte layouts of docs/FORMAT.md for the pure-TypeScript engine: segment header, record
// frame, index file. Mirrors crates/seglog-core/src/format.rs; FORMAT.md is the spec.
// Every u64 is handled as two u32 words (values stay below 2^53, so a JS number holds
// them exactly): no BigInt anywhere.
import * as zlib from 'node:zlib'

const zlibCrc32 = (zlib as { crc32?: typeof zlib.crc32 }).crc32

/** Whether `zlib.crc32` exists (Node >= 20.15); without it every CRC uses the table below. */
export function hasZlibCrc32(): boolean {
  return typeof zlibCrc32 === 'function'
}

// Slicing-by-8 tables for CRC-32/ISO-HDLC (reflected polynomial 0xEDB88320).
const CRC_TABLE = new Int32Array(256 * 8)
for (let n = 0; n < 256; n++) {
  let c = n
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
  CRC_TABLE[n] = c
}
for (let n = 0; n < 256; n++) {
  let c = CRC_TABLE[n]
  for (let k = 1; k < 8; k++) {
    c = CRC_TABLE[c & 0xff] ^ (c >>> 8)
    CRC_TABLE[k * 256 + n] = c
  }
}

/**
 * Below this many bytes a table CRC in JS beats `zlib.crc32` (~110 ns against ~270 ns
 * for a 124-byte frame on the reference VM: the zlib call costs a view allocation and a
 * C++ crossing); above it zlib's SIMD CRC wins. Measured crossover ~200 bytes.
 */
const JS_CRC_MAX_BYTES = 192

function crcTable(b: Uint8Array, start: number, end: number): number {
  const T = CRC_TABLE
  let c = -1
  let i = start
  for (const end8 = end - 7; i < end8; i += 8) {
    const x = c ^ (b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24))
    c =
      T[1792 + (x & 0xff)] ^
      T[1536 + ((x >>> 8) & 0xff)] ^
      T[1280 + ((x >>> 16) & 0xff)] ^
      T[1024 + (x >>> 24)] ^
      T[768 + b[i + 4]] ^
      T[512 + b[i + 5]] ^
      T[256 + b[i + 6]] ^
      T[b[i + 7]]
  }
  for (; i < end; i++) c = T[(c ^ b[i]) & 0xff] ^ (c >>> 8)
  return (c ^ -1) >>> 0
}

/** CRC-32/ISO-HDLC of `b[start, end)`: one contiguous range, as FORMAT.md intends. */
export function crcRange(b: Uint8Array, start: number, end: number): number {
  if (end - start < JS_CRC_MAX_BYTES || zlibCrc32 === undefined) return crcTable(b, start, end)
  return zlibCrc32(new Uint8Array(b.buffer, b.byteOffset + start, end - start))
}

function crc32(b: Uint8Array): number {
  return crcRange(b, 0, b.length)
}

export const FORMAT_VERSION = 1
export const TWO_32 = 4294967296
export const MAX_TIMESTAMP = 2 ** 53 - 1

// ---- Segment header (FORMAT.md 2.1) ----
export const SEGMENT_MAGIC = Buffer.from('SEGLOG\0S', 'latin1')
const SH_MAGIC = 0
const SH_VERSION = SH_MAGIC + 8
const SH_FLAGS = SH_VERSION + 4
const SH_BASE_OFFSET = SH_FLAGS + 4
const SH_CREATED_MS = SH_BASE_OFFSET + 8
const SH_SEGMENT_BYTES = SH_CREATED_MS + 8
const SH_RESERVED = SH_SEGMENT_BYTES + 8
const SH_CRC = SH_RESERVED + 20
export const SEGMENT_HEADER_LEN = SH_CRC + 4

// ---- Record frame (FORMAT.md 2.2) ----
export const F_CRC = 0
export const F_LEN = F_CRC + 4
export const F_OFFSET = F_LEN + 4
export const F_TIMESTAMP = F_OFFSET + 8
export const F_FLAGS = F_TIMESTAMP + 8
export const FRAME_HEADER_LEN = F_FLAGS + 4
export const FLAG_BATCH_CONTINUES = 1
const KNOWN_FLAGS = FLAG_BATCH_CONTINUES

// ---- Index file (FORMAT.md 4) ----
export const INDEX_MAGIC = Buffer.from('SEGLOG\0I', 'latin1')
const IH_MAGIC = 0
const IH_VERSION = IH_MAGIC + 8
const IH_COUNT = IH_VERSION + 4
const IH_BASE_OFFSET = IH_COUNT + 4
const IH_NEXT_OFFSET = IH_BASE_OFFSET + 8
const IH_END_POSITION = IH_NEXT_OFFSET + 8
const IH_RESERVED = IH_END_POSITION + 4
const IH_MIN_TS = IH_RESERVED + 4
const IH_MAX_TS = IH_MIN_TS + 8
const IH_ENTRIES_CRC = IH_MAX_TS + 8
const IH_CRC = IH_ENTRIES_CRC + 4
export const INDEX_HEADER_LEN = IH_CRC + 4
export const INDEX_ENTRY_LEN = 16

/**
 * `min_timestamp` of an index covering no record is 2^64-1, which no JS number holds
 * exactly; in memory it is Infinity (it compares like 2^64-1 with any valid timestamp).
 */
export const NO_MIN_TIMESTAMP = Infinity

/** Rounds up to a multiple of 8; exact for positions up to 2^32 (`-n & 7` keeps the low bits). */
export const align8 = (n: number): number => n + (-n & 7)

/** Largest payload whose padded frame fits in an empty segment (FORMAT.md 3). */
export function maxPayloadForSegment(segmentBytes: number): number {
  return Math.floor((segmentBytes - SEGMENT_HEADER_LEN) / 8) * 8 - FRAME_HEADER_LEN
}

export function u64(buf: Uint8Array, at: number): number {
  return (buf[at] | (buf[at + 1] << 8) | (buf[at + 2] << 16)) + buf[at + 3] * 0x1000000 + u32(buf, at + 4) * TWO_32
}

export function u32(buf: Uint8Array, at: number): number {
  return (buf[at] | (buf[at + 1] << 8) | (buf[at + 2] << 16)) + buf[at + 3] * 0x1000000
}

/** True when the u64 at `at` is above 2^53-1 (its high word is above 2^21-1). */
export function u64AboveSafe(buf: Uint8Array, at: number): boolean {
  return u32(buf, at + 4) > 0x1fffff
}

export function putU32(buf: Uint8Array, at: number, v: number): void {
  buf[at] = v
  buf[at + 1] = v >>> 8
  buf[at + 2] = v >>> 16
  buf[at + 3] = v >>> 24
}

export function putU64(buf: Uint8Array, at: number, v: number): void {
  putU32(buf, at, v >>> 0)
  putU32(buf, at + 4, (v / TWO_32) >>> 0)
}

// ---------------------------------------------------------------------------
// Segment header

export interface SegmentHeader {
  baseOffset: number
  createdMs: number
  segmentBytes: number
}

export function encodeSegmentHeader(h: SegmentHeader): Buffer {
  const b = Buffer.alloc(SEGMENT_HEADER_LEN)
  SEGMENT_MAGIC.copy(b, SH_MAGIC)
  putU32(b, SH_VERSION, FORMAT_VERSION)
  putU32(b, SH_FLAGS, 0)
  putU64(b, SH_BASE_OFFSET, h.baseOffset)
  putU64(b, SH_CREATED_MS, h.createdMs)
  putU64(b, SH_SEGMENT_BYTES, h.segmentBytes)
  putU32(b, SH_CRC, crc32(b.subarray(0, SH_CRC)))
  return b
}

/** Decodes and checks a segment header; a string is the reason for a corruption report. */
export function decodeSegmentHeader(b: Buffer): SegmentHeader | string {
  if (b.length < SEGMENT_HEADER_LEN) return 'segment shorter than its header'
  if (!b.subarray(SH_MAGIC, SH_MAGIC + 8).equals(SEGMENT_MAGIC)) return 'bad segment magic'
  if (crc32(b.subarray(0, SH_CRC)) !== u32(b, SH_CRC)) return 'segment header checksum mismatch'
  if (u32(b, SH_VERSION) !== FORMAT_VERSION) return 'unsupported segment format version'
  if (u32(b, SH_FLAGS) !== 0) return 'unknown segment header flags'
  return { baseOffset: u64(b, SH_BASE_OFFSET), createdMs: u64(b, SH_CREATED_MS), segmentBytes: u64(b, SH_SEGMENT_BYTES) }
}

// ---------------------------------------------------------------------------
// Record frames (FORMAT.md 5)

/** Results of `checkFrame`: a positive number is a valid frame's `frame_len`. */
export const FRAME_END = 0
export const BAD_LENGTH = -1
export const BAD_CRC = -2
export const BAD_OFFSET = -3
export const BAD_HEADER = -4

export function describeProblem(problem: number): string {
  switch (problem) {
    case BAD_LENGTH:
      return 'record length out of bounds'
    case BAD_CRC:
      return 'record checksum mismatch'
    case BAD_OFFSET:
      return 'record offset is not the next expected offset'
    default:
      return 'record header has unknown flags or an invalid timestamp'
  }
}

/** CRC of the frame at `p` of `buf`: bytes `[p+4, p+len)`, one contiguous range. */
export function frameCrcOk(buf: Uint8Array, p: number, len: number): boolean {
  return crcRange(buf, p + F_LEN, p + len) === u32(buf, p + F_CRC)
}

/**
 * Checks the frame at `p` of `buf` (whose bytes end at `limit`, the segment's end or the
 * end of what was read) against FORMAT.md 5, in the Rust engine's order: length bounds,
 * then offset and header (a CRC failure explains a bad field better and wins), then CRC.
 * `sizeLeft` is the segment size minus `p`. Returns `frame_len` or a problem (<= 0).
 * `checkCrc` false skips the CRC of a frame whose fields check out (index walks).
 */
export function checkFrame(buf: Uint8Array, p: number, sizeLeft: number, expectedOffset: number, maxPayload: number, checkCrc: boolean): number {
  if (sizeLeft < 8) return FRAME_END
  const len = u32(buf, p + F_LEN)
  if (len === 0) return FRAME_END
  if (len < FRAME_HEADER_LEN || len - FRAME_HEADER_LEN > maxPayload || len > sizeLeft) return BAD_LENGTH
  if (u64(buf, p + F_OFFSET) !== expectedOffset || u32(buf, p + F_OFFSET + 4) > 0x1fffff) {
    return frameCrcOk(buf, p, len) ? BAD_OFFSET : BAD_CRC
  }
  if ((u32(buf, p + F_FLAGS) & ~KNOWN_FLAGS) !== 0 || u64AboveSafe(buf, p + F_TIMESTAMP)) {
    return frameCrcOk(buf, p, len) ? BAD_HEADER : BAD_CRC
  }
  if (checkCrc && !frameCrcOk(buf, p, len)) return BAD_CRC
  return len
}

// ---------------------------------------------------------------------------
// Index file

export interface IndexFile {
  baseOffset: number
  nextOffset: number
  endPosition: number
  /** `NO_MIN_TIMESTAMP` when no record is covered. */
  minTimestamp: number
  maxTimestamp: number
  relative: Uint32Array
  position: Uint32Array
  maxTs: Float64Array
  count: number
}

export function encodeIndex(idx: IndexFile): Buffer {
  const n = idx.count
  const b = Buffer.alloc(INDEX_HEADER_LEN + n * INDEX_ENTRY_LEN)
  for (let i = 0; i < n; i++) {
    const at = INDEX_HEADER_LEN + i * INDEX_ENTRY_LEN
    putU32(b, at, idx.relative[i])
    putU32(b, at + 4, idx.position[i])
    putU64(b, at + 8, idx.maxTs[i])
  }
  INDEX_MAGIC.copy(b, IH_MAGIC)
  putU32(b, IH_VERSION, FORMAT_VERSION)
  putU32(b, IH_COUNT, n)
  putU64(b, IH_BASE_OFFSET, idx.baseOffset)
  putU64(b, IH_NEXT_OFFSET, idx.nextOffset)
  putU32(b, IH_END_POSITION, idx.endPosition)
  if (idx.minTimestamp === NO_MIN_TIMESTAMP) {
    putU32(b, IH_MIN_TS, 0xffffffff)
    putU32(b, IH_MIN_TS + 4, 0xffffffff)
  } else {
    putU64(b, IH_MIN_TS, idx.minTimestamp)
  }
  putU64(b, IH_MAX_TS, idx.maxTimestamp)
  putU32(b, IH_ENTRIES_CRC, crc32(b.subarray(INDEX_HEADER_LEN)))
  putU32(b, IH_CRC, crc32(b.subarray(0, IH_CRC)))
  return b
}

/**
 * Decodes an index file and checks its own consistency (checksums, ordering, bounds);
 * agreement with the segment's frames is checked by the caller. `undefined` if unusable.
 */
export function decodeIndex(b: Buffer, baseOffset: number, segmentBytes: number): IndexFile | undefined {
  if (b.length < INDEX_HEADER_LEN) return undefined
  if (!b.subarray(IH_MAGIC, IH_MAGIC + 8).equals(INDEX_MAGIC)) return undefined
  if (crc32(b.subarray(0, IH_CRC)) !== u32(b, IH_CRC)) return undefined
  if (u32(b, IH_VERSION) !== FORMAT_VERSION) return undefined
  if (u64AboveSafe(b, IH_BASE_OFFSET) || u64(b, IH_BASE_OFFSET) !== baseOffset) return undefined
  const count = u32(b, IH_COUNT)
  if (b.length !== INDEX_HEADER_LEN + count * INDEX_ENTRY_LEN) return undefined
  if (crc32(b.subarray(INDEX_HEADER_LEN)) !== u32(b, IH_ENTRIES_CRC)) return undefined
  if (u64AboveSafe(b, IH_NEXT_OFFSET)) return undefined
  const nextOffset = u64(b, IH_NEXT_OFFSET)
  const endPosition = u32(b, IH_END_POSITION)
  if (nextOffset < baseOffset || nextOffset - baseOffset > 0xffffffff) return undefined
  if (endPosition < SEGMENT_HEADER_LEN || endPosition > segmentBytes) return undefined
  const relative = new Uint32Array(Math.max(count, 16))
  const position = new Uint32Array(Math.max(count, 16))
  const maxTs = new Float64Array(Math.max(count, 16))
  for (let i = 0; i < count; i++) {
    const at = INDEX_HEADER_LEN + i * INDEX_ENTRY_LEN
    // A running maximum above 2^53-1 cannot describe a valid record.
    if (u64AboveSafe(b, at + 8)) return undefined
    const rel = u32(b, at)
    const pos = u32(b, at + 4)
    const ts = u64(b, at + 8)
    if (i > 0 && (rel <= relative[i - 1] || pos <= position[i - 1] || ts < maxTs[i - 1])) return undefined
    if (pos < SEGMENT_HEADER_LEN || pos >= endPosition || baseOffset + rel >= nextOffset) return undefined
    relative[i] = rel
    position[i] = pos
    maxTs[i] = ts
  }
  const minHigh = u32(b, IH_MIN_TS + 4)
  // min_timestamp is 2^64-1 for an empty index; any value above 2^53-1 means "none" here.
  const minTimestamp = minHigh > 0x1fffff ? NO_MIN_TIMESTAMP : u64(b, IH_MIN_TS)
  // max_timestamp above 2^53-1 cannot be the maximum of valid records: make the
  // adoption check fail (it compares the walk's maximum against it).
  const maxTimestamp = u64AboveSafe(b, IH_MAX_TS) ? Infinity : u64(b, IH_MAX_TS)
  return { baseOffset, nextOffset, endPosition, minTimestamp, maxTimestamp, relative, position, maxTs, count }
}
