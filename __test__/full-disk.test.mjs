// Guards against the classic mmap failure: a full disk killing the process with SIGBUS
// when a page of a sparse file is first written. Segments are preallocated with
// posix_fallocate, so ENOSPC must surface as ERR_SEGLOG_NO_SPACE when a segment is
// created, the process must survive, nothing written before may be lost, and appends
// must resume once space is freed. Needs root to mount a small tmpfs.
import test from 'ava'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { execFileSync } from 'node:child_process'
import { Log } from '../dist/index.mjs'

const isRoot = process.getuid?.() === 0

function payload(offset) {
  const b = Buffer.alloc(200)
  b.writeUInt32LE(offset, 0)
  b.fill(offset % 251, 4)
  return b
}

test('a full disk is ERR_SEGLOG_NO_SPACE, loses nothing, and appends resume after space is freed', async (t) => {
  if (!isRoot) {
    t.log('not root: cannot mount a tmpfs; this test needs root (CI runs as root)')
    t.pass()
    return
  }
  const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'seglog-tmpfs-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt])
  t.teardown(() => {
    try { execFileSync('umount', [mnt]) } catch {}
    fs.rmSync(mnt, { recursive: true, force: true })
  })
  // A filler file we can delete later to free space.
  fs.writeFileSync(path.join(mnt, 'filler'), Buffer.alloc(256 << 10, 1))
  const dir = path.join(mnt, 'log')
  let log = await Log.open(dir, { segmentBytes: 128 << 10 })
  let acknowledged = 0
  let error
  for (let i = 0; i < 100_000; i++) {
    try {
      const off = log.append(payload(i))
      t.is(off, i)
      acknowledged = i + 1
    } catch (err) {
      error = err
      break
    }
  }
  t.truthy(error, 'the disk never filled up')
  t.is(error.code, 'ERR_SEGLOG_NO_SPACE', String(error))
  t.regex(error.message, /No space left/)
  t.true(acknowledged > 100)
  // The failed append wrote nothing; the log is still usable for reads.
  t.is(log.nextOffset, acknowledged)
  t.deepEqual(Buffer.from(log.get(acknowledged - 1).value), payload(acknowledged - 1))
  await log.close()

  log = await Log.open(dir, { segmentBytes: 128 << 10 })
  t.is(log.nextOffset, acknowledged)
  for (const rec of log.records()) t.deepEqual(Buffer.from(rec.value), payload(rec.offset))
  t.true((await log.verify()).ok)

  fs.rmSync(path.join(mnt, 'filler'))
  for (let i = acknowledged; i < acknowledged + 1000; i++) t.is(log.append(payload(i)), i)
  t.is(log.nextOffset, acknowledged + 1000)
  await log.close()
  log = await Log.open(dir, { segmentBytes: 128 << 10 })
  t.is(log.nextOffset, acknowledged + 1000)
  t.true((await log.verify()).ok)
  await log.close()
})
