// Temp directories and logs that are cleaned up when a test ends, and child-process
// helpers for tests that need a second process.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { Log } from '../../dist/index.mjs'

/** A fresh empty directory, removed when the test ends (after its logs are closed). */
export function tempDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'seglog-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Opens a log that is closed when the test ends (teardowns run last-registered first). */
export async function openLog(t, dir, options) {
  const log = await Log.open(dir, options)
  t.teardown(() => log.close())
  return log
}

/** Path of a file in __test__/fixtures. */
export function fixture(name) {
  return fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url))
}

/**
 * Spawns `node <fixture> ...args` with piped stdout/stderr. The child is SIGKILLed at the
 * end of the test if still running. `child.exited` resolves to `{ code, signal }` once the
 * process has exited and its output is fully read.
 */
export function spawnFixture(t, name, args = []) {
  const child = spawn(process.execPath, [fixture(name), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  child.stderrText = ''
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (s) => {
    child.stderrText += s
  })
  child.exited = new Promise((resolve, reject) => {
    child.once('error', reject)
    child.once('close', (code, signal) => resolve({ code, signal }))
  })
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    return child.exited.catch(() => {})
  })
  return child
}

/** Resolves with the first stdout line of `child` for which `match(line)` is true. */
export function waitForLine(child, match) {
  return new Promise((resolve, reject) => {
    let buffered = ''
    const onData = (chunk) => {
      buffered += chunk
      const lines = buffered.split('\n')
      buffered = lines.pop()
      for (const line of lines) {
        if (match(line)) {
          cleanup()
          resolve(line)
          return
        }
      }
    }
    const onClose = (code, signal) => {
      cleanup()
      reject(new Error(`child exited (code ${code}, signal ${signal}) before the expected line; stderr:\n${child.stderrText}`))
    }
    const cleanup = () => {
      child.stdout.off('data', onData)
      child.off('close', onClose)
    }
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', onData)
    child.once('close', onClose)
  })
}
