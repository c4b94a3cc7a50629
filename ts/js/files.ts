// File-system helpers and error construction for the pure-TypeScript engine. Errors carry
// the same codes and message shapes as the Rust engine's (crates/seglog-core/src/error.rs).
import * as fs from 'node:fs'
import { constants as osConstants } from 'node:os'
import * as util from 'node:util'

import { seglogError, type SeglogError } from '../errors'

/** `dir` joined with `name` as Rust's `Path::join` does it (no normalisation), so paths in reports match the native engine's. */
export function joinPath(dir: string, name: string): string {
  return dir.endsWith('/') ? dir + name : `${dir}/${name}`
}

/** An OS error as the native engine reports it: `<op> failed for <path>: <message> (os error N)`. */
export function ioError(op: string, path: string, err: unknown): SeglogError {
  const e = err as NodeJS.ErrnoException
  const name = typeof e?.code === 'string' ? e.code : undefined
  const errno = name !== undefined ? (osConstants.errno as Record<string, number>)[name] : undefined
  let text = e instanceof Error ? e.message : String(err)
  if (typeof e?.errno === 'number') {
    const sys = util.getSystemErrorMap().get(e.errno)
    if (sys !== undefined) text = sys[1].charAt(0).toUpperCase() + sys[1].slice(1)
  }
  const suffix = errno !== undefined ? ` (os error ${errno})` : ''
  const noSpace = name === 'ENOSPC' || name === 'EDQUOT'
  const out = seglogError(noSpace ? 'ERR_SEGLOG_NO_SPACE' : 'ERR_SEGLOG_IO', `${op} failed for ${path}: ${text}${suffix}`)
  if (errno !== undefined) out.errno = errno
  if (name !== undefined) out.osCode = name
  return out
}

/** Runs `f`, turning an OS error into `ioError(op, path)`. */
export function io<R>(op: string, path: string, f: () => R): R {
  try {
    return f()
  } catch (err) {
    throw ioError(op, path, err)
  }
}

/** `corrupt log data in <path> at offset O (byte position P): <reason>`, code ERR_SEGLOG_CORRUPT. */
export function corrupt(path: string, offset: number | undefined, position: number | undefined, reason: string): SeglogError {
  let msg = `corrupt log data in ${path}`
  if (offset !== undefined) msg += ` at offset ${offset}`
  if (position !== undefined) msg += ` (byte position ${position})`
  return seglogError('ERR_SEGLOG_CORRUPT', `${msg}: ${reason}`)
}

/** Writes all of `buf[from, to)` at file position `at`. */
export function writeAll(fd: number, buf: Uint8Array, from: number, to: number, at: number): void {
  while (from < to) {
    const n = fs.writeSync(fd, buf, from, to - from, at)
    from += n
    at += n
  }
}

/** Reads up to `len` bytes at file position `at` into `buf[into, ...)`; returns how many (fewer only at end of file). */
export function readAt(fd: number, buf: Uint8Array, into: number, len: number, at: number): number {
  let got = 0
  while (got < len) {
    const n = fs.readSync(fd, buf, into + got, len - got, at + got)
    if (n === 0) break
    got += n
  }
  return got
}

/** Writes `bytes` to `<path>.tmp`, fsyncs it and renames it over `path` (FORMAT.md 4). */
export function writeFileAtomic(path: string, bytes: Uint8Array): void {
  const tmp = `${path}.tmp`
  const fd = fs.openSync(tmp, 'w')
  try {
    writeAll(fd, bytes, 0, bytes.length, 0)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, path)
}

/** Makes a directory's entries (creations, renames, removals) durable. */
export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r')
  try {
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}
