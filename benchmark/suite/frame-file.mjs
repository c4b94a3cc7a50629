// The hand-rolled baseline: an append-only file of CRC-framed records written with
// buffered `fs.writeSync`, the best a careful pure-JS log can do without an engine.
//
// Frame, little-endian:  crc u32 | length u32 | offset lo u32 | offset hi u32 | timestamp f64 | payload
// The CRC-32 (IEEE) covers everything after itself. Records are staged in a 1 MiB buffer
// and written with one `writeSync` when it fills (or before a read or a sync); no
// BigInt, no allocation per record, and the fastest CRC for the size (`crc-32`, pure JS,
// below 4 KiB; `zlib.crc32` above). An in-memory position per record makes `get` one
// `readSync`; opening scans the whole file, checking every CRC, and cuts a torn tail.
// Durable appends use group commit: one `fs.fdatasync` (on a libuv thread) in flight,
// every record appended meanwhile rides on the next one.

import fs from 'node:fs'
import zlib from 'node:zlib'
import CRC32 from 'crc-32'

const CRC_AT = 0
const LENGTH_AT = CRC_AT + 4
const OFFSET_AT = LENGTH_AT + 4
const TIMESTAMP_AT = OFFSET_AT + 8
export const FRAME_HEADER_BYTES = TIMESTAMP_AT + 8
const STAGING_BYTES = 1 << 20
const READ_CHUNK_BYTES = 1 << 20
const SMALL_CRC_BYTES = 4096
const TWO_32 = 4294967296

function crc32(buf, start, end) {
  const view = buf.subarray(start, end)
  return end - start < SMALL_CRC_BYTES ? CRC32.buf(view) >>> 0 : zlib.crc32(view)
}

export class FrameFile {
  #fd
  #staging = Buffer.allocUnsafeSlow(STAGING_BYTES)
  #staged = 0 // bytes in #staging not yet written
  #fileBytes = 0 // bytes written to the file
  #positions = new Float64Array(1 << 16) // file position of each record's frame
  #next = 0
  #readBuf = Buffer.allocUnsafeSlow(READ_CHUNK_BYTES)
  #syncing = false
  #waiters = []

  constructor(file) {
    this.#fd = fs.openSync(file, fs.existsSync(file) ? 'r+' : 'w+')
    this.#recover()
  }

  get nextOffset() {
    return this.#next
  }

  append(payload) {
    const n = payload.length
    const frame = FRAME_HEADER_BYTES + n
    if (this.#staged + frame > STAGING_BYTES) this.flush()
    if (frame > STAGING_BYTES) throw new RangeError(`record of ${n} bytes exceeds the staging buffer`)
    const b = this.#staging
    const p = this.#staged
    const offset = this.#next
    b.writeUInt32LE(n, p + LENGTH_AT)
    b.writeUInt32LE(offset >>> 0, p + OFFSET_AT)
    b.writeUInt32LE(Math.floor(offset / TWO_32), p + OFFSET_AT + 4)
    b.writeDoubleLE(Date.now(), p + TIMESTAMP_AT)
    b.set(payload, p + FRAME_HEADER_BYTES)
    b.writeUInt32LE(crc32(b, p + LENGTH_AT, p + frame), p + CRC_AT)
    this.#position(offset, this.#fileBytes + p)
    this.#staged = p + frame
    this.#next = offset + 1
    return offset
  }

  appendBatch(payloads) {
    const first = this.#next
    for (let i = 0; i < payloads.length; i++) this.append(payloads[i])
    return first
  }

  /** Appends, then resolves with the offset once it is on stable storage (group commit). */
  appendDurable(payload) {
    const offset = this.append(payload)
    return new Promise((resolve, reject) => {
      this.#waiters.push({ offset, resolve, reject })
      this.#startSync()
    })
  }

  #startSync() {
    if (this.#syncing || this.#waiters.length === 0) return
    this.flush()
    const covered = this.#waiters
    this.#waiters = []
    this.#syncing = true
    fs.fdatasync(this.#fd, (err) => {
      this.#syncing = false
      for (const w of covered) err ? w.reject(err) : w.resolve(w.offset)
      this.#startSync()
    })
  }

  flush() {
    let done = 0
    while (done < this.#staged) done += fs.writeSync(this.#fd, this.#staging, done, this.#staged - done, this.#fileBytes + done)
    this.#fileBytes += this.#staged
    this.#staged = 0
  }

  /** The payload of record `offset`, as a view of a reused buffer (valid until the next call). */
  get(offset) {
    if (offset >= this.#next) return undefined
    if (this.#staged > 0) this.flush()
    const pos = this.#positions[offset]
    const end = offset + 1 < this.#next ? this.#positions[offset + 1] : this.#fileBytes
    const frame = end - pos
    if (frame > this.#readBuf.length) this.#readBuf = Buffer.allocUnsafeSlow(frame)
    const b = this.#readBuf
    if (fs.readSync(this.#fd, b, 0, frame, pos) !== frame) throw new Error(`short read of record ${offset}`)
    this.#check(b, 0, frame, offset)
    return b.subarray(FRAME_HEADER_BYTES, frame)
  }

  /** Calls visit(payload view, offset) for records [from, to), checking every CRC. */
  scan(from, to, visit) {
    if (this.#staged > 0) this.flush()
    to = Math.min(to, this.#next)
    let offset = from
    while (offset < to) {
      const pos = this.#positions[offset]
      const want = Math.min(READ_CHUNK_BYTES, (to < this.#next ? this.#positions[to] : this.#fileBytes) - pos)
      const b = this.#readBuf
      const got = fs.readSync(this.#fd, b, 0, want, pos)
      let p = 0
      while (offset < to && p + FRAME_HEADER_BYTES <= got) {
        const frame = FRAME_HEADER_BYTES + b.readUInt32LE(p + LENGTH_AT)
        if (p + frame > got) break
        this.#check(b, p, frame, offset)
        visit(b.subarray(p + FRAME_HEADER_BYTES, p + frame), offset)
        p += frame
        offset++
      }
      if (p === 0) throw new Error(`record ${offset} at ${pos} does not fit a read`)
    }
    return offset - from
  }

  #check(b, p, frame, offset) {
    if (b.readUInt32LE(p + OFFSET_AT) !== offset >>> 0 || crc32(b, p + LENGTH_AT, p + frame) !== b.readUInt32LE(p + CRC_AT)) {
      throw new Error(`record ${offset}: bad frame`)
    }
  }

  #position(offset, pos) {
    if (offset === this.#positions.length) {
      const grown = new Float64Array(this.#positions.length * 2)
      grown.set(this.#positions)
      this.#positions = grown
    }
    this.#positions[offset] = pos
  }

  /** Scans the file, checking every frame; cuts the file at the first torn or bad one. */
  #recover() {
    const size = fs.fstatSync(this.#fd).size
    const b = this.#readBuf
    let pos = 0
    for (;;) {
      const got = fs.readSync(this.#fd, b, 0, Math.min(READ_CHUNK_BYTES, size - pos), pos)
      let p = 0
      while (p + FRAME_HEADER_BYTES <= got) {
        const frame = FRAME_HEADER_BYTES + b.readUInt32LE(p + LENGTH_AT)
        if (frame > READ_CHUNK_BYTES || p + frame > got) break
        const offset = this.#next
        if (b.readUInt32LE(p + OFFSET_AT) !== offset >>> 0 || crc32(b, p + LENGTH_AT, p + frame) !== b.readUInt32LE(p + CRC_AT)) break
        this.#position(offset, pos + p)
        this.#next = offset + 1
        p += frame
      }
      pos += p
      if (p === 0 || pos >= size) break
    }
    if (pos < size) fs.ftruncateSync(this.#fd, pos)
    this.#fileBytes = pos
  }

  close() {
    if (this.#fd === null) return
    this.flush()
    fs.fsyncSync(this.#fd)
    fs.closeSync(this.#fd)
    this.#fd = null
  }
}
