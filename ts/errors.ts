import { constants as osConstants } from 'node:os'

/** Error codes seglog throws, as `error.code`. Stable across versions. */
export type SeglogErrorCode =
  | 'ERR_SEGLOG_CORRUPT'
  | 'ERR_SEGLOG_CLOSED'
  | 'ERR_SEGLOG_IO'
  | 'ERR_SEGLOG_NO_SPACE'
  | 'ERR_SEGLOG_LOCKED'
  | 'ERR_SEGLOG_READ_ONLY'
  | 'ERR_SEGLOG_RECORD_TOO_LARGE'
  | 'ERR_SEGLOG_BATCH_TOO_LARGE'
  | 'ERR_SEGLOG_OFFSET_OUT_OF_RANGE'
  | 'ERR_SEGLOG_INVALID_ARGUMENT'
  | 'ERR_SEGLOG_INTERNAL'
  | 'ERR_SEGLOG_UNSUPPORTED'
  | 'ERR_INVALID_ARG_TYPE'

export interface SeglogError extends Error {
  code: SeglogErrorCode
  /** For errors caused by the operating system: its error number (5 for EIO)... */
  errno?: number
  /** ...and name (`'EIO'`, `'ENOSPC'`). */
  osCode?: string
}

function withCode<E extends Error>(err: E, code: SeglogErrorCode): E & SeglogError {
  return Object.assign(err, { code })
}

export function typeError(message: string): TypeError & SeglogError {
  return withCode(new TypeError(message), 'ERR_INVALID_ARG_TYPE')
}

export function rangeError(code: SeglogErrorCode, message: string): RangeError & SeglogError {
  return withCode(new RangeError(message), code)
}

export function seglogError(code: SeglogErrorCode, message: string): SeglogError {
  return withCode(new Error(message), code)
}

const OS_ERROR = /\(os error (\d+)\)/
let errnoNames: Map<number, string> | undefined

/** The name of an errno (5 -> 'EIO'), from Node's own table. */
function errnoName(errno: number): string | undefined {
  if (errnoNames === undefined) {
    errnoNames = new Map()
    for (const [name, n] of Object.entries(osConstants.errno)) if (!errnoNames.has(n)) errnoNames.set(n, name)
  }
  return errnoNames.get(errno)
}

/**
 * Native errors about bad values become `RangeError`s, keeping code and message; errors
 * caused by the OS get `errno` and `osCode` (the engine's message ends in "(os error N)").
 */
export function fromNative(err: unknown): unknown {
  if (!(err instanceof Error)) return err
  const e = err as SeglogError
  if (e.code === 'ERR_SEGLOG_INVALID_ARGUMENT' && !(err instanceof RangeError)) {
    return rangeError('ERR_SEGLOG_INVALID_ARGUMENT', err.message)
  }
  const m = OS_ERROR.exec(err.message)
  if (m !== null && e.errno === undefined) {
    e.errno = Number(m[1])
    const name = errnoName(e.errno)
    if (name !== undefined) e.osCode = name
  }
  return err
}

/** An error from a code and message reported by the engine without throwing. */
export function fromOutcome(code: string, message: string): SeglogError {
  return fromNative(seglogError(code as SeglogErrorCode, message)) as SeglogError
}

/** Throws unless `v` is a safe non-negative integer (offsets, timestamps, sizes). */
export function checkUint(name: string, v: unknown): asserts v is number {
  if (typeof v !== 'number') throw typeError(`${name} must be a number, got ${typeof v}`)
  if (!Number.isSafeInteger(v) || v < 0) {
    throw rangeError('ERR_SEGLOG_INVALID_ARGUMENT', `${name} must be a safe non-negative integer, got ${v}`)
  }
}
