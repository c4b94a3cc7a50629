/** Error codes seglog throws, as `error.code`. Stable across versions. */
export type SeglogErrorCode =
  | 'ERR_SEGLOG_CORRUPT'
  | 'ERR_SEGLOG_CLOSED'
  | 'ERR_SEGLOG_IO'
  | 'ERR_SEGLOG_NO_SPACE'
  | 'ERR_SEGLOG_LOCKED'
  | 'ERR_SEGLOG_RECORD_TOO_LARGE'
  | 'ERR_SEGLOG_BATCH_TOO_LARGE'
  | 'ERR_SEGLOG_OFFSET_OUT_OF_RANGE'
  | 'ERR_SEGLOG_INVALID_ARGUMENT'
  | 'ERR_SEGLOG_INTERNAL'
  | 'ERR_INVALID_ARG_TYPE'

export interface SeglogError extends Error {
  code: SeglogErrorCode
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

/** Native errors about bad values become `RangeError`s, keeping code and message. */
export function fromNative(err: unknown): unknown {
  if (err instanceof Error && (err as SeglogError).code === 'ERR_SEGLOG_INVALID_ARGUMENT' && !(err instanceof RangeError)) {
    return rangeError('ERR_SEGLOG_INVALID_ARGUMENT', err.message)
  }
  return err
}

/** Throws unless `v` is a safe non-negative integer (offsets, timestamps, sizes). */
export function checkUint(name: string, v: unknown): asserts v is number {
  if (typeof v !== 'number') throw typeError(`${name} must be a number, got ${typeof v}`)
  if (!Number.isSafeInteger(v) || v < 0) {
    throw rangeError('ERR_SEGLOG_INVALID_ARGUMENT', `${name} must be a safe non-negative integer, got ${v}`)
  }
}
