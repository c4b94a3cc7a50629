// The writer lock of the pure-TypeScript engine. Node has no flock(2), so this engine
// cannot take the lock the native engine takes (FORMAT.md 6.1). What it does instead:
//
// 1. It creates `seglog.lock` (empty, as the native engine does) and refuses to open
//    (`ERR_SEGLOG_LOCKED`) while any process holds a flock on it, which it learns from
//    /proc/locks (Linux only; elsewhere this check is skipped). That detects a native
//    writer in this or any other process. It checks again after step 2, so a native
//    writer that locked meanwhile is seen too.
// 2. Among JS-engine writers it holds `seglog.jslock`, created exclusively (O_EXCL) and
//    holding `pid host token`. A lock file whose process is gone (same host) is stale
//    and taken over; one whose process is alive (including this process: another `Log`
//    or a worker thread) means `ERR_SEGLOG_LOCKED`. It is removed on close.
//
// What it cannot do: a native writer does not know about `seglog.jslock`, so a native
// writer that opens the directory while a JS-engine writer has it open is not stopped.
// Never open one directory for writing with both engines at once.
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as os from 'node:os'

import { seglogError, type SeglogError } from '../errors'
import { io, joinPath } from './files'

export const LOCK_FILE_NAME = 'seglog.lock'
export const JS_LOCK_FILE_NAME = 'seglog.jslock'

export class JsLock {
  readonly path: string
  readonly #token: string
  #released = false

  private constructor(path: string, token: string) {
    this.path = path
    this.#token = token
  }

  /** Takes the JS engine's writer lock on `dir` (see the file comment). */
  static take(dir: string): JsLock {
    const flockPath = joinPath(dir, LOCK_FILE_NAME)
    io('open lock file', flockPath, () => fs.closeSync(fs.openSync(flockPath, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644)))
    checkNoFlock(dir, flockPath)
    const path = joinPath(dir, JS_LOCK_FILE_NAME)
    const token = `${process.pid} ${os.hostname()} ${crypto.randomBytes(8).toString('hex')}\n`
    for (let attempt = 0; ; attempt++) {
      try {
        const fd = fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644)
        try {
          fs.writeSync(fd, token)
        } finally {
          fs.closeSync(fd)
        }
        break
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw lockedError(dir, path)
          return io('open lock file', path, () => {
            throw err
          })
        }
        if (!removeIfStale(path)) throw lockedError(dir, path)
      }
    }
    const lock = new JsLock(path, token)
    try {
      checkNoFlock(dir, flockPath)
    } catch (err) {
      lock.release()
      throw err
    }
    return lock
  }

  /** Removes the lock file if it is still ours. Idempotent. */
  release(): void {
    if (this.#released) return
    this.#released = true
    try {
      if (fs.readFileSync(this.path, 'utf8') === this.#token) fs.unlinkSync(this.path)
    } catch {
      // Already gone: nothing to release.
    }
  }
}

function lockedError(dir: string, lockPath: string): SeglogError {
  return seglogError('ERR_SEGLOG_LOCKED', `log ${dir} is already open for writing (lock held on ${lockPath})`)
}

/**
 * Removes a JS lock file whose process is gone. Returns false if its holder may be alive.
 * The file is removed only if it is still the one read (same inode), so two openers
 * breaking the same stale lock do not remove each other's fresh one (short of a race
 * between the stat and the unlink).
 */
function removeIfStale(path: string): boolean {
  let text: string
  let ino: number
  try {
    ino = fs.statSync(path).ino
    text = fs.readFileSync(path, 'utf8')
  } catch {
    return true // removed meanwhile: try again
  }
  const [pidText, host] = text.split(' ')
  const pid = Number(pidText)
  // A lock file still being written (empty), or from another host: assume it is held.
  if (!Number.isSafeInteger(pid) || pid <= 0 || host !== os.hostname()) return false
  if (processAlive(pid)) return false
  try {
    if (fs.statSync(path).ino === ino) fs.unlinkSync(path)
  } catch {
    // Removed by someone else meanwhile.
  }
  return true
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Throws `ERR_SEGLOG_LOCKED` if /proc/locks shows a flock on `flockPath` (a native writer). */
function checkNoFlock(dir: string, flockPath: string): void {
  let table: string
  try {
    table = fs.readFileSync('/proc/locks', 'utf8')
  } catch {
    return // not Linux: native writers cannot be detected (see the file comment)
  }
  const st = fs.statSync(flockPath)
  const { major, minor } = splitDev(st.dev)
  for (const line of table.split('\n')) {
    const f = line.trim().split(/\s+/)
    // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; blocked waiters have "->" in f[1].
    if (f[1] !== 'FLOCK' || f.length < 6) continue
    const [maj, min, ino] = f[5].split(':')
    if (Number(ino) === st.ino && parseInt(maj, 16) === major && parseInt(min, 16) === minor) throw lockedError(dir, flockPath)
  }
}

/** Linux's `dev_t` encoding (glibc `gnu_dev_major`/`gnu_dev_minor`). */
function splitDev(dev: number): { major: number; minor: number } {
  const hi = Math.floor(dev / 2 ** 32)
  const lo = dev >>> 0
  return { major: ((lo >>> 8) & 0xfff) | ((hi & 0xfffff000) >>> 0), minor: (lo & 0xff) | ((lo >>> 12) & 0xfff00) }
}
