// Store open time (issue 5): N keys (16-byte string keys, 100-byte values) written,
// a snapshot taken, the store closed; then each trial opens it in a fresh child process
// and reports the time to a usable store, next to a full replay (snapshots removed).
// Usage: node benchmark/store-open.mjs [keys=1000000] [trials=5]
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const dist = path.join(here, '..', 'dist', 'index.mjs')
const [keys = 1_000_000, trials = 5] = process.argv.slice(2).map(Number)

if (process.env.SEGLOG_STORE_OPEN_CHILD) {
  const { Store } = await import(dist)
  const t = performance.now()
  const store = await Store.open(process.env.SEGLOG_STORE_OPEN_CHILD, { durability: 'none', snapshotEveryBytes: 0 })
  const ms = performance.now() - t
  const s = store.stats()
  if (store.size !== keys || store.get('k' + String(keys - 1).padStart(15, '0'))?.length !== 100) throw new Error('wrong contents after open')
  process.stdout.write(JSON.stringify({ ms, loaded: s.snapshot.loaded !== undefined, replayed: s.snapshot.recordsReplayed }) + '\n')
  await store.close()
  process.exit(0)
}

const { Store } = await import(dist)
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'seglog-store-open-'))
const store = await Store.open(dir, { durability: 'none', snapshotEveryBytes: 0 })
const value = Buffer.alloc(100, 7)
for (let i = 0; i < keys; i++) store.put('k' + String(i).padStart(15, '0'), value)
await store.snapshot()
await store.close()

const run = () => JSON.parse(execFileSync(process.execPath, [fileURLToPath(import.meta.url), String(keys)], { env: { ...process.env, SEGLOG_STORE_OPEN_CHILD: dir }, encoding: 'utf8' }))
const median = (a) => a.slice().sort((x, y) => x - y)[a.length >> 1]
const withSnapshot = Array.from({ length: trials }, run)
fs.rmSync(path.join(dir, 'snapshots'), { recursive: true })
const replay = Array.from({ length: trials }, run)
fs.rmSync(dir, { recursive: true })
const fmt = (rs) => `median ${median(rs.map((r) => r.ms)).toFixed(1)} ms (min ${Math.min(...rs.map((r) => r.ms)).toFixed(1)}, max ${Math.max(...rs.map((r) => r.ms)).toFixed(1)}); snapshot loaded: ${rs[0].loaded}, records replayed: ${rs[0].replayed}`
console.log(`Store.open, ${keys.toLocaleString('en-US')} keys, ${trials} trials, each in a fresh process:`)
console.log(`  with a fresh snapshot: ${fmt(withSnapshot)}`)
console.log(`  full replay (no snapshot): ${fmt(replay)}`)
