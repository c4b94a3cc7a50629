// seglog durability benchmark: group-commit durable appends and tail latency, 100 B
// records, on a real disk.
//
//   npm run bench:durable                      (builds first; 5 trials)
//   node benchmark/durable.mjs [--trials N] [--quick] [--only a,b] [--dir PARENT] [--out FILE]
//                              [--window-ms MS] [--tail-records N] [--wait-idle SECONDS] [--retries N]
//
// --trials N        trials per workload (default 5; 1 with --quick)
// --quick           a smoke run of a few seconds: short windows, 300 tail records
// --only a,b        some workloads: fsync, durable1, durable16, durable256, tailRemote, tailLocal
// --dir PARENT      where the temporary logs go (default os.tmpdir(), unless that is
//                   memory-backed: then benchmark/durable/.tmp on the repo's disk)
// --out FILE        JSON results (default benchmark/results/durable.json)
// --window-ms MS    measured window of the throughput workloads (default 4000)
// --tail-records N  measured records per tail trial (default 5000, one per ~1 ms)
// --wait-idle S     before each child, wait up to S seconds for other processes to leave
//                   the CPUs under 25% and the disk under 20% busy
// --retries N       run a child again (up to N times, default 2) when other processes
//                   used over 25% of the CPUs before or during it, or the disk was over
//                   20% busy before it; discarded runs are kept in the JSON, and runs
//                   still contended after the retries are kept and flagged
//
// Workloads (each trial of each in a fresh child process and a fresh directory;
// workloads interleaved within a trial and rotated between trials):
//   fsync       baseline, one fdatasync per record: `fs.writeSync` of the 100 B record to
//               a plain file, then `fs.fdatasyncSync`, sequentially. Per record: the
//               fdatasync time and the write + fdatasync time.
//   durableN    N concurrent callers (1, 16, 256), each looping
//               `await log.appendDurable(payload)` on a log opened with
//               `{ durability: 'sync' }`. Appends acknowledged per second, syncs per
//               second (`log.syncStats.syncs`), records per sync, and the latency of
//               every acknowledgement (call to resolution) in the window.
//   tailRemote  a writer appends one record every 1 ms, open loop (each record's send
//               time is scheduled from the start, not from the previous send, and the
//               intended send time `performance.timeOrigin + performance.now()` is
//               embedded in the payload); a reader in ANOTHER process runs
//               `for await (const r of log.tail({ from: 0 }))` on
//               `Log.open(dir, { readOnly: true })` and takes receive time minus the
//               embedded intended time, for every record.
//   tailLocal   the same with the tail on the writer's own Log, in the writer process.
//               (The tail writers use the default durability, 'interval'.)
// Latencies are exact nearest-rank percentiles of the sorted samples of one trial; the
// summary gives the median over trials and the min-max. Ratios (the issue's goals) are
// taken per trial against the baseline of the same trial, then the median.
//
// Before every child the parent runs `sync` and waits for Dirty + Writeback in
// /proc/meminfo to drop under 4 MiB, samples the machine's CPU and disk load, and reads
// the machine's CPU time and the block device's write and flush counters before and
// after (the device counters count every process, so they are context: bytes written
// per sync show write amplification). Children load seglog from a snapshot of dist/
// and native/ taken when the run starts, so a rebuild during the run is not picked up.

import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { setImmediate as immediate } from 'node:timers/promises'
import { PAYLOAD_BYTES, payloadFor, checkPayload } from './payload.mjs'
import { Samples, spread, drainDirty, machineLoad, machineCpu, deviceWriteStats, buildId, environment, isMemoryFs, snapshotBuild, cliArgs, BUSY_WARN } from './harness.mjs'

const SCRIPT = fileURLToPath(import.meta.url)
const HERE = path.dirname(SCRIPT)
const ROOT = path.join(HERE, '..')

const WORKLOADS = [
  { name: 'fsync', kind: 'baseline', label: 'baseline: `writeSync` 100 B + `fdatasyncSync`, plain file, sequential' },
  { name: 'durable1', kind: 'durable', callers: 1, label: '`appendDurable`, 1 caller' },
  { name: 'durable16', kind: 'durable', callers: 16, label: '`appendDurable`, 16 concurrent callers' },
  { name: 'durable256', kind: 'durable', callers: 256, label: '`appendDurable`, 256 concurrent callers' },
  { name: 'tailRemote', kind: 'tail', label: '`tail()` on a readOnly Log in another process' },
  { name: 'tailLocal', kind: 'tail', label: "`tail()` on the writer's own Log (same process)" },
]

const SIZES = {
  full: { windowMs: 4000, warmupMs: 1000, tailRecords: 5000, tailWarmup: 300, periodMs: 1 },
  quick: { windowMs: 300, warmupMs: 100, tailRecords: 300, tailWarmup: 50, periodMs: 1 },
}

// Goals from the issue ("Speed"), reported as ratios, not asserted.
const GOAL_RATE_RATIO = 100 // durable256 appends/s >= 100x one-fdatasync-per-record
const GOAL_P99_RATIO = 3 // p99 ack at 256 callers <= 3x p99 fdatasync

const DISK_BUSY_WARN = 0.2 // the disk busy with other processes' I/O before a child starts
const POOL = 4096

const { flag, opt } = cliArgs()

// ---------------------------------------------------------------------------
// Children: one workload, one trial, one JSON line on stdout.

/** seglog from the build snapshot the parent passed (--lib), so a rebuild mid-run cannot mix builds. */
function loadSeglog() {
  return import(pathToFileURL(path.join(opt('--lib', ROOT), 'dist', 'index.mjs')).href)
}

function must(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`)
}

const cpuNs = (c) => (c.user + c.system) * 1000

/** Baseline: one fdatasync per record on a plain file. */
async function childFsync({ dir: parentDir, windowMs, warmupMs }) {
  const dir = fs.mkdtempSync(path.join(parentDir, 'seglog-durable-'))
  const file = path.join(dir, 'baseline.log')
  const pool = Array.from({ length: POOL }, (_, i) => payloadFor(i))
  const fd = fs.openSync(file, 'w')
  try {
    let i = 0
    for (const until = performance.now() + warmupMs; performance.now() < until; i++) {
      fs.writeSync(fd, pool[i & (POOL - 1)])
      fs.fdatasyncSync(fd)
    }
    const i0 = i
    const sync = new Samples(1 << 17)
    const rec = new Samples(1 << 17)
    const c0 = process.cpuUsage()
    const ws = performance.now()
    const we = ws + windowMs
    let t = ws
    while (t < we) {
      const t0 = t
      fs.writeSync(fd, pool[i & (POOL - 1)])
      const t1 = performance.now()
      fs.fdatasyncSync(fd)
      t = performance.now()
      sync.push(t - t1)
      rec.push(t - t0)
      i++
    }
    const ms = t - ws
    const cpu = cpuNs(process.cpuUsage(c0))
    // Correctness: the file holds exactly the records written, in order.
    must(fs.fstatSync(fd).size === i * PAYLOAD_BYTES, `file size ${fs.fstatSync(fd).size} for ${i} records`)
    const data = fs.readFileSync(file)
    for (let k = 0; k < i; k++) must(checkPayload(data.subarray(k * PAYLOAD_BYTES, (k + 1) * PAYLOAD_BYTES), k & (POOL - 1)), `record ${k}`)
    const n = i - i0
    return {
      workload: 'fsync',
      records: n,
      ms,
      perSec: (n / ms) * 1000,
      syncsPerSec: (n / ms) * 1000,
      recordsPerSync: 1,
      totalRecords: i,
      totalSyncs: i,
      ackMs: rec.summary(),
      fdatasyncMs: sync.summary(),
      cpuNsPerRecord: cpu / n,
      maxRssMb: process.resourceUsage().maxRSS / 1024,
    }
  } finally {
    fs.closeSync(fd)
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

/** `callers` concurrent closed-loop callers of `appendDurable` on a `durability: 'sync'` log. */
async function childDurable(name, { dir: parentDir, windowMs, warmupMs, callers: C }) {
  const { Log } = await loadSeglog()
  const dir = fs.mkdtempSync(path.join(parentDir, 'seglog-durable-'))
  const pool = Array.from({ length: POOL }, (_, i) => payloadFor(i))
  let log
  try {
    log = await Log.open(dir, { durability: 'sync' })
    must(log.durability === 'sync', 'durability mode')
    const segs0 = log.segments().length

    // Which pool payload each acknowledged offset was appended with (-1: none yet).
    let owner = new Int32Array(1 << 20).fill(-1)
    const setOwner = (off, idx) => {
      while (off >= owner.length) {
        const b = new Int32Array(owner.length * 2).fill(-1)
        b.set(owner)
        owner = b
      }
      if (owner[off] !== -1) throw new Error(`offset ${off} acknowledged twice`)
      owner[off] = idx
    }

    // Harness work per record is kept small (two clock reads, two array stores): the
    // synchronous part of appendDurable is timed for 1 call in 64, and syncStats (a
    // getter that builds an object) is read on 1 acknowledgement in 16 (every sync is
    // still seen when a sync covers 16 or more records; otherwise a uniform sample).
    const ack = new Samples(1 << 20) // ms, records issued inside the window
    const call = new Samples(1 << 15) // ms, the synchronous part of appendDurable (sampled)
    const syncMs = new Samples(1 << 14) // duration of syncs in the window, as JS sees it
    let phase = 0 // 0 warm-up, 1 measuring, 2 stopping
    let acked = 0
    let lastSyncs = 0
    const m = {}
    const wsPlanned = performance.now() + warmupMs
    const wePlanned = wsPlanned + windowMs
    const caller = async (c) => {
      let k = 0
      while (phase < 2) {
        const idx = (c * 613 + k++) & (POOL - 1)
        const measured = phase === 1
        let off
        const t0 = performance.now()
        if (measured && (k & 63) === 0) {
          const pending = log.appendDurable(pool[idx])
          call.push(performance.now() - t0)
          off = await pending
        } else {
          off = await log.appendDurable(pool[idx])
        }
        const t1 = performance.now()
        if (measured) ack.push(t1 - t0)
        setOwner(off, idx)
        if ((++acked & 15) === 0 && phase === 1) {
          const s = log.syncStats
          if (s.syncs !== lastSyncs) {
            lastSyncs = s.syncs
            syncMs.push(s.lastSyncMs)
          }
        }
        if (phase === 0 && t1 >= wsPlanned) {
          phase = 1
          lastSyncs = log.syncStats.syncs
          Object.assign(m, { t0: t1, acked0: acked, syncs0: lastSyncs, cpu0: process.cpuUsage(), elu0: performance.eventLoopUtilization() })
        } else if (phase === 1 && t1 >= wePlanned) {
          phase = 2
          Object.assign(m, { t1, acked1: acked, syncs1: log.syncStats.syncs, cpu: process.cpuUsage(m.cpu0), elu: performance.eventLoopUtilization(m.elu0) })
        }
      }
    }
    await Promise.all(Array.from({ length: C }, (_, c) => caller(c)))

    // Correctness: every offset below nextOffset was acknowledged once, is durable by the
    // log's own account, and holds the payload its caller appended.
    const next = log.nextOffset
    must(next === acked, `nextOffset ${next} vs ${acked} acknowledged`)
    must(log.durableOffset >= next, `durableOffset ${log.durableOffset} < nextOffset ${next}`)
    let o = 0
    for (const r of log.records()) {
      must(r.offset === o && owner[o] !== -1 && Buffer.compare(r.value, pool[owner[o]]) === 0, `record ${o}`)
      o++
    }
    must(o === next, `read ${o} of ${next} records`)

    const ms = m.t1 - m.t0
    const n = m.acked1 - m.acked0
    const syncs = m.syncs1 - m.syncs0
    const segs = log.segments().length
    return {
      workload: name,
      callers: C,
      records: n,
      ms,
      perSec: (n / ms) * 1000,
      syncs,
      syncsPerSec: (syncs / ms) * 1000,
      recordsPerSync: n / syncs,
      ackMs: ack.summary(),
      appendCallMs: call.summary(),
      syncMs: syncMs.summary(),
      cpuNsPerRecord: cpuNs(m.cpu) / n,
      eventLoopUtilization: m.elu.utilization,
      maxRssMb: process.resourceUsage().maxRSS / 1024,
      totalRecords: next,
      totalSyncs: log.syncStats.syncs,
      segmentRolls: segs - segs0,
    }
  } finally {
    if (log) await log.close().catch(() => {})
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

// Tail payload (100 B): u32 offset | u32 0 | f64 intended send time (timeOrigin-based ms) |
// f64 actual append time (timeOrigin-based ms) | f64 actual append time, CLOCK_MONOTONIC ms
// (process.hrtime, one clock for every process on the machine) | zero filler.
const T_INTENDED = 8
const T_APPEND = 16
const T_APPEND_MONO = 24
const wallNow = () => performance.timeOrigin + performance.now()
const monoNow = () => Number(process.hrtime.bigint()) / 1e6

/**
 * How far this process's `performance.timeOrigin + performance.now()` is from
 * CLOCK_MONOTONIC (ms); the difference between two processes' values is the error of
 * comparing their timeOrigin-based times.
 */
function clockOffset() {
  const xs = []
  for (let i = 0; i < 9; i++) xs.push(wallNow() - monoNow())
  return xs.sort((a, b) => a - b)[4]
}

/** Receives `records` records from a tail and measures each one's latency. */
function receiver(warmup) {
  const fromIntended = new Samples(1 << 13)
  const fromAppend = new Samples(1 << 13)
  let got = 0
  let bad = 0
  return {
    take(r) {
      const recvWall = wallNow()
      const recvMono = monoNow()
      const v = r.value
      const dv = new DataView(v.buffer, v.byteOffset, v.byteLength)
      if (v.length !== PAYLOAD_BYTES || dv.getUint32(0, true) !== r.offset || r.offset !== got) bad++
      if (got >= warmup) {
        fromIntended.push(recvWall - dv.getFloat64(T_INTENDED, true))
        fromAppend.push(recvMono - dv.getFloat64(T_APPEND_MONO, true))
      }
      return ++got
    },
    result() {
      return { received: got, bad, latencyMs: fromIntended.summary(), appendToReceiveMs: fromAppend.summary() }
    },
  }
}

/** The reader of tailRemote: its own process, a readOnly Log, `for await` over `tail()`. */
async function childTailReader({ dir, records: total, warmup }) {
  const { Log } = await loadSeglog()
  const log = await Log.open(dir, { readOnly: true })
  const rx = receiver(warmup)
  const offset = clockOffset()
  const c0 = process.cpuUsage()
  process.stdout.write('ready\n')
  for await (const r of log.tail({ from: 0 })) {
    if (rx.take(r) === total) break
  }
  const cpu = cpuNs(process.cpuUsage(c0))
  await log.close()
  return { ...rx.result(), clockOffsetMs: offset, readerCpuNsPerRecord: cpu / total }
}

/** Writer of the tail workloads, open loop at one record per `periodMs`. */
async function childTail(name, { dir: parentDir, records, warmup, periodMs }) {
  const { Log } = await loadSeglog()
  const dir = fs.mkdtempSync(path.join(parentDir, 'seglog-durable-'))
  const total = warmup + records
  let log
  let reader
  try {
    log = await Log.open(dir) // default durability ('interval': background sync every 100 ms)
    let received // Promise of the receiver's result
    if (name === 'tailRemote') {
      reader = spawn(process.execPath, [SCRIPT, '--child', 'tailReader', '--lib', opt('--lib', ROOT), '--dir', dir, '--records', String(total), '--warmup', String(warmup)],
        { stdio: ['ignore', 'pipe', 'pipe'] })
      let out = ''
      let err = ''
      reader.stderr.on('data', (d) => (err += d))
      const ready = new Promise((resolve, reject) => {
        reader.stdout.on('data', (d) => {
          out += d
          if (out.startsWith('ready\n')) resolve()
        })
        reader.on('exit', (code) => reject(new Error(`reader exited (${code}) before ready: ${err.trim()}`)))
      })
      received = new Promise((resolve, reject) => {
        reader.on('exit', (code, signal) => {
          const lines = out.trim().split('\n')
          try {
            if (code !== 0) throw new Error(`reader exit ${code ?? signal}: ${err.trim().split('\n').slice(0, 6).join(' | ')}`)
            resolve(JSON.parse(lines[lines.length - 1]))
          } catch (e) {
            reject(e)
          }
        })
      })
      received.catch(() => {})
      await ready
    } else {
      const rx = receiver(warmup)
      const c0 = process.cpuUsage()
      received = (async () => {
        for await (const r of log.tail({ from: 0 })) {
          if (rx.take(r) === total) break
        }
        return { ...rx.result(), clockOffsetMs: clockOffset(), readerCpuNsPerRecord: null, writerAndReaderCpuNsPerRecord: cpuNs(process.cpuUsage(c0)) / total }
      })()
    }

    // Open loop: record i is due at start + i * periodMs whatever happened before. The
    // writer sleeps (Atomics.wait, precise to tens of microseconds, no CPU) until shortly
    // before it is due, spins the rest, appends, then yields to the event loop once (so a
    // same-process tail and the background sync run). Lateness of the writer itself
    // counts in the open-loop latency and is reported on its own (writerLagMs).
    const sleeper = new Int32Array(new SharedArrayBuffer(4))
    const buf = Buffer.alloc(PAYLOAD_BYTES)
    const lag = new Samples(1 << 13)
    const appendMs = new Samples(1 << 13)
    const start = performance.now() + 5
    for (let i = 0; i < total; i++) {
      const due = start + i * periodMs
      const wait = due - performance.now()
      if (wait > 0.2) Atomics.wait(sleeper, 0, 0, wait - 0.15)
      while (performance.now() < due) {}
      const now = performance.now()
      buf.writeUInt32LE(i, 0)
      buf.writeDoubleLE(performance.timeOrigin + due, T_INTENDED)
      buf.writeDoubleLE(performance.timeOrigin + now, T_APPEND)
      buf.writeDoubleLE(monoNow(), T_APPEND_MONO)
      must(log.append(buf) === i, `append ${i}`)
      if (i >= warmup) {
        lag.push(now - due)
        appendMs.push(performance.now() - now)
      }
      await immediate()
    }
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('tail did not receive every record within 10 s')), 10_000).unref())
    const rx = await Promise.race([received, timeout])
    must(rx.received === total && rx.bad === 0, `received ${rx.received} of ${total}, ${rx.bad} bad`)
    const writerClockOffsetMs = clockOffset()
    const { processCpuMs: readerProcessCpuMs, ...rxr } = rx
    return {
      workload: name,
      records,
      periodMs,
      ...rxr,
      readerProcessCpuMs,
      writerLagMs: lag.summary(),
      appendMs: appendMs.summary(),
      clockSkewMs: rx.clockOffsetMs - writerClockOffsetMs,
    }
  } finally {
    if (reader && reader.exitCode === null) reader.kill()
    if (log) await log.close().catch(() => {})
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

// ---------------------------------------------------------------------------
// Parent: environment, trials, table, JSON.

async function parent() {
  const quick = flag('--quick')
  const trials = Number(opt('--trials', quick ? 1 : 5))
  const sizes = { ...(quick ? SIZES.quick : SIZES.full) }
  if (opt('--window-ms')) sizes.windowMs = Number(opt('--window-ms'))
  if (opt('--tail-records')) sizes.tailRecords = Number(opt('--tail-records'))
  const only = opt('--only') ? opt('--only').split(',') : null
  const workloads = only ? WORKLOADS.filter((w) => only.includes(w.name)) : WORKLOADS
  const out = path.resolve(opt('--out', path.join(HERE, 'results', 'durable.json')))
  const waitIdleS = Number(opt('--wait-idle', 0))
  const retries = Number(opt('--retries', 2))
  if (!Number.isInteger(trials) || trials < 1) fail('--trials must be a positive integer')
  if (!(sizes.windowMs > 0) || !(sizes.tailRecords > 0)) fail('--window-ms and --tail-records take positive numbers')
  if (!(waitIdleS >= 0)) fail('--wait-idle takes a number of seconds')
  if (!Number.isInteger(retries) || retries < 0) fail('--retries takes a count')
  if (only && workloads.length !== only.length) fail(`--only: known workloads are ${WORKLOADS.map((w) => w.name).join(', ')}`)
  if (!fs.existsSync(path.join(ROOT, 'dist', 'index.mjs'))) fail('dist/ is missing: run `npm run build` first')

  // A real disk: os.tmpdir() unless it is memory-backed.
  let tmp = opt('--dir')
  let ownTmp = false
  if (tmp === undefined) {
    tmp = os.tmpdir()
    if (isMemoryFs(tmp)) {
      tmp = path.join(HERE, 'durable', '.tmp')
      ownTmp = true
    }
  }
  tmp = path.resolve(tmp)
  fs.mkdirSync(tmp, { recursive: true })
  if (isMemoryFs(tmp)) fail(`${tmp} is memory-backed (tmpfs): durable figures would be meaningless; pass --dir on a disk`)

  const env = environment(ROOT, tmp)
  const say = (s) => process.stderr.write(s + '\n')
  say(`seglog ${env.seglogVersion} (${env.gitCommit}${env.gitDirty ? ', dirty tree' : ''}) on ${env.cpuModel}, ${env.cores} cores, ` +
    `Linux ${env.kernel}, ${env.mountFsType} on ${env.mountSource} (write cache: ${env.deviceWriteCache}) at ${tmp}, Node ${env.node}`)
  say(`${trials} trials x ${workloads.length} workloads, ${sizes.windowMs} ms windows after ${sizes.warmupMs} ms warm-up, ` +
    `${sizes.tailRecords} tail records (+${sizes.tailWarmup} warm-up) at one per ${sizes.periodMs} ms; one child process each`)

  // Every child loads seglog from a snapshot of dist/ and native/ taken now (just after
  // `npm run build`), so a rebuild by someone else during the run cannot mix builds.
  const lib = snapshotBuild(ROOT)
  env.benchBuildId = buildId(lib)

  const started = Date.now()
  const runs = []
  const discarded = []
  const failures = []
  const busyNow = (l) => l.cpu > BUSY_WARN || (l.disk ?? 0) > DISK_BUSY_WARN
  /**
   * One child for workload `w`. Before it: drain dirty pages, sample the machine's load
   * (waiting up to --wait-idle for it to drop). Around it: machine CPU time and device
   * counters, so the CPU other processes used meanwhile (machine busy time minus the
   * child's own CPU time) can be told apart.
   */
  const runChild = (w, t) => {
    const drain = drainDirty()
    let load = machineLoad(250, env.blockDevice)
    for (const until = Date.now() + waitIdleS * 1000; busyNow(load) && Date.now() < until; ) load = machineLoad(250, env.blockDevice)
    const cargs = [SCRIPT, '--child', w.name, '--lib', lib, '--dir', tmp, '--window-ms', String(sizes.windowMs), '--warmup-ms', String(sizes.warmupMs),
      '--callers', String(w.callers ?? 0), '--records', String(sizes.tailRecords), '--warmup', String(sizes.tailWarmup),
      '--period-ms', String(sizes.periodMs)]
    const dev0 = deviceWriteStats(env.blockDevice)
    const cpu0 = machineCpu()
    const p = spawnSync(process.execPath, cargs, { encoding: 'utf8', timeout: 120_000, maxBuffer: 4 << 20 })
    const cpu1 = machineCpu()
    const dev1 = deviceWriteStats(env.blockDevice)
    const lines = (p.stdout || '').trim().split('\n').filter(Boolean)
    let r
    try {
      r = JSON.parse(lines[lines.length - 1])
    } catch {}
    if (p.status !== 0 || !r) {
      const why = p.error ? String(p.error) : `exit ${p.status}${p.signal ? ` signal ${p.signal}` : ''}: ${(p.stderr || '').trim().split('\n').slice(0, 8).join(' | ')}`
      return { error: why }
    }
    const wallMs = cpu1.at - cpu0.at
    const ownMs = r.processCpuMs + (r.readerProcessCpuMs ?? 0)
    // Kernel work done on the child's behalf outside its threads (interrupts, writeback
    // and journal threads) counts as "others" here too, so this over-estimates a little.
    const othersCpu = +Math.max(0, (cpu1.busyMs - cpu0.busyMs - ownMs) / (wallMs * env.cores)).toFixed(3)
    Object.assign(r, { trial: t + 1, ...drain, cpuBusyBefore: load.cpu, diskBusyBefore: load.disk, othersCpuDuring: othersCpu, childWallMs: wallMs })
    if (dev0 && dev1) {
      // Whole device, whole child (set-up and checks included), every process: context.
      r.device = { writeIos: dev1.writeIos - dev0.writeIos, writeMiB: ((dev1.writeSectors - dev0.writeSectors) * 512) / 2 ** 20, flushes: dev1.flushes - dev0.flushes }
      if (r.totalSyncs) r.device.writeKiBPerSync = (r.device.writeMiB * 1024) / r.totalSyncs
    }
    r.contended = busyNow(load) || othersCpu > BUSY_WARN
    return r
  }
  const note = (r) => {
    const parts = []
    if (busyNow({ cpu: r.cpuBusyBefore, disk: r.diskBusyBefore })) parts.push(`before: CPUs ${(r.cpuBusyBefore * 100).toFixed(0)}%, disk ${((r.diskBusyBefore ?? 0) * 100).toFixed(0)}% busy`)
    if (r.othersCpuDuring > BUSY_WARN) parts.push(`during: other processes ${(r.othersCpuDuring * 100).toFixed(0)}% of the CPUs`)
    return parts.length ? `  [${parts.join('; ')}]` : ''
  }
  for (let t = 0; t < trials; t++) {
    const order = workloads.map((_, i) => workloads[(i + t) % workloads.length])
    for (const w of order) {
      let r
      for (let attempt = 0; ; attempt++) {
        r = runChild(w, t)
        if (r.error || !r.contended || attempt >= retries) break
        r.attempt = attempt + 1
        discarded.push(r)
        say(`  trial ${t + 1} ${w.name.padEnd(10)} discarded, machine busy${note(r)}: running it again`)
      }
      if (r.error) {
        failures.push({ trial: t + 1, workload: w.name, error: r.error })
        say(`  trial ${t + 1} ${w.name.padEnd(10)} FAILED ${r.error}`)
        continue
      }
      runs.push(r)
      if (w.kind === 'tail') {
        say(`  trial ${t + 1} ${w.name.padEnd(10)} p50 ${fmtMs(r.latencyMs.p50)}  p99 ${fmtMs(r.latencyMs.p99)}  p99.9 ${fmtMs(r.latencyMs.p999)}  ` +
          `max ${fmtMs(r.latencyMs.max)}  (append->receive p50 ${fmtMs(r.appendToReceiveMs.p50)}, writer lag p99 ${fmtMs(r.writerLagMs.p99)})${note(r)}`)
      } else {
        say(`  trial ${t + 1} ${w.name.padEnd(10)} ${fmtRate(r.perSec).padStart(9)}/s  ${r.recordsPerSync.toFixed(1).padStart(6)} rec/sync  ` +
          `ack p50 ${fmtMs(r.ackMs.p50)} p99 ${fmtMs(r.ackMs.p99)} max ${fmtMs(r.ackMs.max)}` +
          `${r.fdatasyncMs ? `  fdatasync p50 ${fmtMs(r.fdatasyncMs.p50)} p99 ${fmtMs(r.fdatasyncMs.p99)}` : ''}` +
          `${r.device?.writeKiBPerSync !== undefined ? `  device ${r.device.writeKiBPerSync.toFixed(0)} KiB/sync` : ''}${note(r)}`)
      }
    }
  }
  fs.rmSync(lib, { recursive: true, force: true })
  if (ownTmp) fs.rmSync(tmp, { recursive: true, force: true })

  // Per-workload summaries: median and min-max over trials.
  const byName = (n) => runs.filter((r) => r.workload === n)
  const pct = (rs, key) => Object.fromEntries(['p50', 'p99', 'p999', 'max'].map((p) => [p, spread(rs.map((r) => r[key]?.[p]))]))
  const summary = {}
  for (const w of workloads) {
    const rs = byName(w.name)
    if (rs.length === 0) continue
    const s = { label: w.label, trials: rs.length }
    if (w.kind === 'tail') {
      Object.assign(s, {
        records: rs[0].records,
        periodMs: rs[0].periodMs,
        latencyMs: pct(rs, 'latencyMs'),
        appendToReceiveMs: pct(rs, 'appendToReceiveMs'),
        writerLagMs: pct(rs, 'writerLagMs'),
        appendMs: pct(rs, 'appendMs'),
        clockSkewMs: spread(rs.map((r) => r.clockSkewMs)),
        readerCpuNsPerRecord: spread(rs.map((r) => r.readerCpuNsPerRecord)),
      })
    } else {
      Object.assign(s, {
        callers: w.callers ?? 1,
        perSec: spread(rs.map((r) => r.perSec)),
        syncsPerSec: spread(rs.map((r) => r.syncsPerSec)),
        recordsPerSync: spread(rs.map((r) => r.recordsPerSync)),
        ackMs: pct(rs, 'ackMs'),
        cpuNsPerRecord: spread(rs.map((r) => r.cpuNsPerRecord)),
        maxRssMb: spread(rs.map((r) => r.maxRssMb)),
        windowMs: spread(rs.map((r) => r.ms)),
        deviceWriteKiBPerSync: spread(rs.map((r) => r.device?.writeKiBPerSync)),
      })
      if (w.kind === 'baseline') s.fdatasyncMs = pct(rs, 'fdatasyncMs')
      else {
        s.syncMs = pct(rs, 'syncMs')
        s.appendCallMs = pct(rs, 'appendCallMs')
        s.eventLoopUtilization = spread(rs.map((r) => r.eventLoopUtilization))
        s.segmentRolls = spread(rs.map((r) => r.segmentRolls))
      }
    }
    summary[w.name] = s
  }

  // Ratios to the baseline, paired within a trial (each trial's own fdatasync run).
  const base = Object.fromEntries(byName('fsync').map((r) => [r.trial, r]))
  const paired = (name, f) => spread(byName(name).filter((r) => base[r.trial]).map((r) => f(r, base[r.trial])))
  for (const w of workloads) {
    if (w.kind !== 'durable' || !summary[w.name]) continue
    summary[w.name].rateRatioToBaseline = paired(w.name, (r, b) => r.perSec / b.perSec)
    summary[w.name].p99AckRatioToP99Fdatasync = paired(w.name, (r, b) => r.ackMs.p99 / b.fdatasyncMs.p99)
    summary[w.name].p50AckRatioToP50Fdatasync = paired(w.name, (r, b) => r.ackMs.p50 / b.fdatasyncMs.p50)
  }
  const goals = {}
  const g256 = summary.durable256
  if (g256?.rateRatioToBaseline) {
    const v = g256.rateRatioToBaseline.median
    goals.rate = { goal: `durable256 appends/s >= ${GOAL_RATE_RATIO}x one-fdatasync-per-record`, ratio: g256.rateRatioToBaseline, met: v >= GOAL_RATE_RATIO, factorToGoal: GOAL_RATE_RATIO / v }
  }
  if (g256?.p99AckRatioToP99Fdatasync) {
    const v = g256.p99AckRatioToP99Fdatasync.median
    goals.p99 = { goal: `p99 ack at 256 callers <= ${GOAL_P99_RATIO}x p99 fdatasync`, ratio: g256.p99AckRatioToP99Fdatasync, met: v <= GOAL_P99_RATIO, factorToGoal: v / GOAL_P99_RATIO }
  }

  // Tables on stdout.
  const elapsedS = (Date.now() - started) / 1000
  // median (min-max); the unit is written once when the three share it.
  const mr = (x, f) => {
    if (!x) return '-'
    const [a, b, c] = [f(x.median), f(x.min), f(x.max)]
    if (b === c) return a
    const unit = a.match(/ \S+$/)?.[0]
    const strip = (v) => (unit && v.endsWith(unit) ? v.slice(0, -unit.length) : v)
    return unit && b.endsWith(unit) && c.endsWith(unit) ? `${strip(a)} (${strip(b)}-${strip(c)})${unit}` : `${a} (${b}-${c})`
  }
  const lines = []
  lines.push('')
  lines.push(`seglog ${env.seglogVersion} durable appends and tail latency, ${PAYLOAD_BYTES} B records; ${trials} trial${trials > 1 ? 's' : ''}, ` +
    'one process per workload x trial; median (min-max) over trials')
  lines.push(`${env.cpuModel}, ${env.cores} cores${env.virtualized ? ' (VM)' : ''}, Linux ${env.kernel}, ${env.mountFsType} on ${env.mountSource} ` +
    `(${env.mountOptions}; device write cache: ${env.deviceWriteCache}, rotational ${env.deviceRotational}) at ${tmp}, Node ${env.node}, ` +
    `commit ${env.gitCommit}${env.gitDirty ? ' + uncommitted changes' : ''}`)
  lines.push(`throughput windows ${sizes.windowMs} ms after ${sizes.warmupMs} ms warm-up; latency = call to resolution of every record issued in the window`)
  lines.push('')
  lines.push('| workload | appends/s | x baseline | syncs/s | records/sync | ack p50 | ack p99 | ack p99.9 | ack max | CPU us/record | device KiB written/sync |')
  lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for (const w of workloads) {
    const s = summary[w.name]
    if (w.kind === 'tail') continue
    if (!s) {
      lines.push(`| ${w.label} | failed | | | | | | | | | |`)
      continue
    }
    lines.push(`| ${w.label} | ${mr(s.perSec, fmtRate)} | ${w.kind === 'baseline' ? '1' : mr(s.rateRatioToBaseline, fmtX)} | ${mr(s.syncsPerSec, fmtRate)} | ` +
      `${mr(s.recordsPerSync, (x) => x.toFixed(1))} | ${mr(s.ackMs.p50, fmtMs)} | ${mr(s.ackMs.p99, fmtMs)} | ${mr(s.ackMs.p999, fmtMs)} | ` +
      `${mr(s.ackMs.max, fmtMs)} | ${mr(s.cpuNsPerRecord, (x) => (x / 1000).toFixed(1))} | ${mr(s.deviceWriteKiBPerSync, (x) => x.toFixed(1))} |`)
  }
  if (summary.fsync) {
    const f = summary.fsync.fdatasyncMs
    lines.push('')
    lines.push(`baseline fdatasync alone: p50 ${mr(f.p50, fmtMs)}, p99 ${mr(f.p99, fmtMs)}, p99.9 ${mr(f.p999, fmtMs)}, max ${mr(f.max, fmtMs)}`)
  }
  const durable = workloads.filter((w) => w.kind === 'durable' && summary[w.name])
  if (durable.length) {
    lines.push('sync duration as JS sees it (`syncStats.lastSyncMs`: native sync() call to its promise settling): ' +
      durable.map((w) => `${w.callers} caller${w.callers > 1 ? 's' : ''} p50 ${mr(summary[w.name].syncMs.p50, fmtMs)} p99 ${mr(summary[w.name].syncMs.p99, fmtMs)}`).join('; '))
    lines.push('event-loop utilisation in the window: ' + durable.map((w) => `${w.callers}: ${mr(summary[w.name].eventLoopUtilization, (x) => x.toFixed(2))}`).join('; ') +
      '; segment rolls per window: ' + durable.map((w) => `${w.callers}: ${mr(summary[w.name].segmentRolls, String)}`).join('; '))
    lines.push('synchronous part of `appendDurable` (the append on the JS thread, page faults included): ' +
      durable.map((w) => `${w.callers}: p50 ${mr(summary[w.name].appendCallMs.p50, fmtMs)} p99.9 ${mr(summary[w.name].appendCallMs.p999, fmtMs)} max ${mr(summary[w.name].appendCallMs.max, fmtMs)}`).join('; '))
    if (summary.fsync) {
      lines.push('ack latency / baseline fdatasync latency: ' + durable.map((w) => {
        const s = summary[w.name]
        return `${w.callers}: p50 ${mr(s.p50AckRatioToP50Fdatasync, fmtX)}, p99 ${mr(s.p99AckRatioToP99Fdatasync, fmtX)}`
      }).join('; '))
    }
  }
  const tails = workloads.filter((w) => w.kind === 'tail' && summary[w.name])
  if (tails.length) {
    lines.push('')
    lines.push(`Tail latency, open loop: one ${PAYLOAD_BYTES} B record every ${sizes.periodMs} ms, ${sizes.tailRecords} records per trial ` +
      '(receive time minus the intended send time embedded in the record). append->receive: from the actual append ' +
      '(CLOCK_MONOTONIC, no writer lag); writer lag: actual minus intended send time; clock skew: error of comparing ' +
      'the two processes\' timeOrigin-based clocks')
    lines.push('')
    lines.push('| tail | p50 | p99 | p99.9 | max | append->receive p50 / p99 | writer lag p99 | append() max | clock skew |')
    lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
    for (const w of tails) {
      const s = summary[w.name]
      lines.push(`| ${w.label} | ${mr(s.latencyMs.p50, fmtMs)} | ${mr(s.latencyMs.p99, fmtMs)} | ${mr(s.latencyMs.p999, fmtMs)} | ${mr(s.latencyMs.max, fmtMs)} | ` +
        `${fmtMs(s.appendToReceiveMs.p50.median)} / ${fmtMs(s.appendToReceiveMs.p99.median)} | ${mr(s.writerLagMs.p99, fmtMs)} | ${mr(s.appendMs.max, fmtMs)} | ${fmtMs(s.clockSkewMs.median)} |`)
    }
  }
  lines.push('')
  lines.push('Goals (issue, "Speed"), from per-trial ratios against the same trial\'s baseline:')
  for (const g of Object.values(goals)) {
    const verdict = g.met ? 'MET' : `MISSED by ${g.factorToGoal.toFixed(2)}x`
    lines.push(`- ${g.goal}: ${mr(g.ratio, fmtX)} -> ${verdict}`)
  }
  if (Object.keys(goals).length === 0) lines.push('- not computed (needs the fsync and durable256 workloads)')
  lines.push('')
  const repoBuildAtEnd = buildId(ROOT)
  lines.push(`build ${env.benchBuildId} (dist/ + native/ snapshot taken at start, used by every child)` +
    (repoBuildAtEnd !== env.benchBuildId ? `; the repo was rebuilt meanwhile (now ${repoBuildAtEnd}), which this run did not pick up` : ''))
  const contended = runs.filter((r) => r.contended).length
  lines.push(`${runs.length} runs, ${failures.length} failed, ${discarded.length} discarded and rerun because the machine was busy ` +
    `(other processes over ${BUSY_WARN * 100}% of the CPUs before or during the child, or the disk over ${DISK_BUSY_WARN * 100}% busy before it); ` +
    `${elapsedS.toFixed(0)} s; load average at start ${env.loadavg.join(' ')}`)
  if (contended > 0) {
    lines.push(`WARNING: ${contended} of ${runs.length} kept runs were still contended after ${retries} retries (flagged in the JSON: ` +
      '"contended"); rerun on an idle machine (or with --wait-idle) to quote them.')
  }
  console.log(lines.join('\n'))

  const result = {
    benchmark: 'durable',
    date: new Date(started).toISOString(),
    elapsedS,
    env,
    config: { trials, quick, waitIdleS, retries, busyWarn: { cpu: BUSY_WARN, disk: DISK_BUSY_WARN }, payloadBytes: PAYLOAD_BYTES, ...sizes, tmpDir: tmp, goals: { rateRatio: GOAL_RATE_RATIO, p99Ratio: GOAL_P99_RATIO } },
    units: { perSec: 'records/s', latency: 'ms', cpuNsPerRecord: 'ns' },
    goals,
    summary,
    contendedRuns: contended,
    runs,
    discarded,
    failures,
  }
  fs.mkdirSync(path.dirname(out), { recursive: true })
  fs.writeFileSync(out, JSON.stringify(result, null, 2) + '\n')
  console.log(`results: ${path.relative(process.cwd(), out) || out}`)
  if (failures.length > 0) process.exit(1)
}

function fmtMs(ms) {
  if (ms === undefined || ms === null || !Number.isFinite(ms)) return '-'
  if (ms < 1) return `${(ms * 1000).toFixed(0)} us`
  if (ms < 10) return `${ms.toFixed(2)} ms`
  return `${ms.toFixed(1)} ms`
}

function fmtRate(x) {
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)} M`
  if (x >= 1e3) return `${(x / 1e3).toFixed(1)} k`
  return x.toFixed(0)
}

function fmtX(x) {
  return x >= 10 ? `${x.toFixed(1)}x` : `${x.toFixed(2)}x`
}

function fail(msg) {
  console.error(msg)
  process.exit(2)
}

// Dispatch last, so every module-level constant above is initialised.
if (flag('--child')) {
  const name = opt('--child')
  const o = {
    dir: opt('--dir'),
    windowMs: Number(opt('--window-ms')),
    warmupMs: Number(opt('--warmup-ms')),
    callers: Number(opt('--callers')),
    records: Number(opt('--records')),
    warmup: Number(opt('--warmup')),
    periodMs: Number(opt('--period-ms')),
  }
  const r = await (name === 'fsync' ? childFsync(o)
    : name.startsWith('durable') ? childDurable(name, o)
    : name === 'tailReader' ? childTailReader(o)
    : name === 'tailRemote' || name === 'tailLocal' ? childTail(name, o)
    : Promise.reject(new Error(`unknown child ${name}`)))
  const u = process.cpuUsage() // the whole process, start-up included: to tell others' load apart
  r.processCpuMs = (u.user + u.system) / 1000
  process.stdout.write(JSON.stringify(r) + '\n')
} else {
  await parent()
}
