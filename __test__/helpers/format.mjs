// An independent reader of the on-disk format, written from docs/FORMAT.md alone, so
// tests can find, damage and cross-check frames without going through the engine.
import fs from 'node:fs'
import path from 'node:path'
import zlib from 'node:zlib'

export const SEGMENT_HEADER_LEN = 64
export const FRAME_HEADER_LEN = 28
export const INDEX_HEADER_LEN = 64
export const INDEX_ENTRY_LEN = 16
export const FLAG_BATCH_CONTINUES = 1
export const SEGMENT_MAGIC = Buffer.from('SEGLOG\0S', 'latin1')
export const INDEX_MAGIC = Buffer.from('SEGLOG\0I', 'latin1')

const TWO_32 = 2 ** 32

export const align8 = (n) => (n + 7) & ~7

export function readU64(buf, at) {
  return buf.readUInt32LE(at) + buf.readUInt32LE(at + 4) * TWO_32
}

// Frame header (FORMAT.md 2.2): crc u32 | frame_len u32 | offset u64 | timestamp u64 | flags u32.
export const CRC_AT = 0
export const FRAME_LEN_AT = CRC_AT + 4
export const OFFSET_AT = FRAME_LEN_AT + 4
export const TIMESTAMP_AT = OFFSET_AT + 8
export const FLAGS_AT = TIMESTAMP_AT + 8

/** CRC-32 of frame bytes `4..frame_len` (FORMAT.md 2.2). */
export function frameCrc(buf, position, frameLen) {
  return zlib.crc32(buf.subarray(position + FRAME_LEN_AT, position + frameLen))
}

/** `.seg` files of `dir`, oldest first, as absolute paths. */
export function segmentPaths(dir) {
  return fs
    .readdirSync(dir)
    .filter((n) => /^\d{20}\.seg$/.test(n))
    .sort()
    .map((n) => path.join(dir, n))
}

export function indexPathOf(segmentPath) {
  return segmentPath.replace(/\.seg$/, '.idx')
}

export function decodeSegmentHeader(buf) {
  return {
    magicOk: buf.subarray(0, 8).equals(SEGMENT_MAGIC),
    version: buf.readUInt32LE(8),
    flags: buf.readUInt32LE(12),
    baseOffset: readU64(buf, 16),
    createdMs: readU64(buf, 24),
    segmentBytes: readU64(buf, 32),
    reservedZero: buf.subarray(40, 60).every((b) => b === 0),
    crcOk: buf.readUInt32LE(60) === zlib.crc32(buf.subarray(0, 60)),
  }
}

/**
 * Walks the frames of a segment file's bytes from position 64 until a zero length, a
 * length out of bounds or a CRC mismatch. Returns the frames and why the walk stopped.
 */
export function walkFrames(buf) {
  const frames = []
  let position = SEGMENT_HEADER_LEN
  for (;;) {
    if (position + 8 > buf.length) return { frames, end: position, stop: 'end of file' }
    const frameLen = buf.readUInt32LE(position + FRAME_LEN_AT)
    if (frameLen === 0) return { frames, end: position, stop: 'zero length' }
    if (frameLen < FRAME_HEADER_LEN || position + frameLen > buf.length) return { frames, end: position, stop: 'bad length' }
    if (frameCrc(buf, position, frameLen) !== buf.readUInt32LE(position + CRC_AT)) return { frames, end: position, stop: 'bad crc' }
    frames.push({
      position,
      frameLen,
      offset: readU64(buf, position + OFFSET_AT),
      timestamp: readU64(buf, position + TIMESTAMP_AT),
      flags: buf.readUInt32LE(position + FLAGS_AT),
      payload: buf.subarray(position + FRAME_HEADER_LEN, position + frameLen),
    })
    position = align8(position + frameLen)
  }
}

/** The frames of the segment file at `segmentPath` (see `walkFrames`). */
export function readSegmentFrames(segmentPath) {
  return walkFrames(fs.readFileSync(segmentPath))
}

export function decodeIndex(buf) {
  const entryCount = buf.readUInt32LE(12)
  const entries = []
  for (let i = 0; i < entryCount; i++) {
    const at = INDEX_HEADER_LEN + i * INDEX_ENTRY_LEN
    entries.push({ relativeOffset: buf.readUInt32LE(at), position: buf.readUInt32LE(at + 4), maxTimestamp: readU64(buf, at + 8) })
  }
  const entryBytes = buf.subarray(INDEX_HEADER_LEN, INDEX_HEADER_LEN + entryCount * INDEX_ENTRY_LEN)
  return {
    magicOk: buf.subarray(0, 8).equals(INDEX_MAGIC),
    version: buf.readUInt32LE(8),
    entryCount,
    baseOffset: readU64(buf, 16),
    nextOffset: readU64(buf, 24),
    endPosition: buf.readUInt32LE(32),
    entriesCrcOk: buf.readUInt32LE(56) === zlib.crc32(entryBytes),
    headerCrcOk: buf.readUInt32LE(60) === zlib.crc32(buf.subarray(0, 60)),
    lengthOk: buf.length === INDEX_HEADER_LEN + entryCount * INDEX_ENTRY_LEN,
    entries,
  }
}

/** Overwrites `bytes.length` bytes of the file at `position` with `bytes`. */
export function patchFile(file, position, bytes) {
  const fd = fs.openSync(file, 'r+')
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, position)
  } finally {
    fs.closeSync(fd)
  }
}
