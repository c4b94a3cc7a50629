import { typeError } from './errors'

/** Turns values into bytes and back. `decode` receives bytes it may keep. */
export interface Codec<T> {
  encode(value: T): Uint8Array
  decode(bytes: Uint8Array): T
}

/**
 * Built-in codecs also decode straight from a range of a frame buffer. `buf` may be
 * reused afterwards, so the value must not alias it.
 */
export interface FastCodec<T> extends Codec<T> {
  decodeFrom(buf: Buffer, start: number, end: number): T
}

export function isFastCodec<T>(c: Codec<T>): c is FastCodec<T> {
  return typeof (c as FastCodec<T>).decodeFrom === 'function'
}

/**
 * Raw bytes: the default and the fast path. Accepts any Uint8Array. `get` returns a
 * Buffer (a copy); iteration returns Uint8Array views of a batch buffer that is never
 * reused, which are several times cheaper to create than Buffers.
 */
const raw: FastCodec<Uint8Array> = {
  encode(value: Uint8Array): Uint8Array {
    if (!(value instanceof Uint8Array)) throw typeError(`value must be a Uint8Array (raw codec), got ${describe(value)}`)
    return value
  },
  decode(bytes: Uint8Array): Uint8Array {
    return bytes
  },
  decodeFrom(buf: Buffer, start: number, end: number): Uint8Array {
    const out = Buffer.allocUnsafe(end - start)
    buf.copy(out, 0, start, end)
    return out
  },
}

const utf8: FastCodec<string> = {
  encode(value: string): Uint8Array {
    if (typeof value !== 'string') throw typeError(`value must be a string (utf8 codec), got ${describe(value)}`)
    return Buffer.from(value, 'utf8')
  },
  decode(bytes: Uint8Array): string {
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')
  },
  decodeFrom(buf: Buffer, start: number, end: number): string {
    return buf.toString('utf8', start, end)
  },
}

/**
 * JSON values. Its `decode` is generic so `codecs.json` fits any `Codec<T>`:
 * `Log.open<Order>(dir, { codec: codecs.json })`. `undefined`, functions and symbols
 * are not JSON and are rejected.
 */
export interface JsonCodec {
  encode(value: unknown): Uint8Array
  decode<T = unknown>(bytes: Uint8Array): T
}

const json: FastCodec<unknown> = {
  encode(value: unknown): Uint8Array {
    let text: string | undefined
    try {
      text = JSON.stringify(value)
    } catch (err) {
      throw typeError(`value cannot be encoded as JSON: ${(err as Error).message}`)
    }
    if (text === undefined) throw typeError(`value cannot be encoded as JSON: ${describe(value)}`)
    return Buffer.from(text, 'utf8')
  },
  decode(bytes: Uint8Array): unknown {
    return JSON.parse(utf8.decode(bytes))
  },
  decodeFrom(buf: Buffer, start: number, end: number): unknown {
    return JSON.parse(buf.toString('utf8', start, end))
  },
}

function describe(v: unknown): string {
  if (v === null) return 'null'
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object'
  return typeof v
}

export const codecs = {
  raw,
  utf8,
  json: json as JsonCodec,
}

export function checkCodec<T>(codec: unknown): asserts codec is Codec<T> {
  const c = codec as Codec<T> | null
  if (c === null || typeof c !== 'object' || typeof c.encode !== 'function' || typeof c.decode !== 'function') {
    throw typeError('codec must be an object with encode(value) and decode(bytes) functions')
  }
}
