// Shared by every benchmark (suite.mjs, log-throughput.mjs, durable.mjs): statistics,
// machine state (dirty pages, CPU and disk load, device counters), the environment
// record, and the build snapshot children load seglog from. Built-in modules only.

import { execFileSync, spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

/** A growable Float64Array of samples. */
export class Samples {
  constructor(initial = 1 << 16) {
    this.a = new Float64Array(initial)
    this.n = 0
  }

  push(x) {
    if (this.n === this.a.length) {
      const b = new Float64Array(this.a.length * 2)
      b.set(this.a)
      this.a = b
    }
    this.a[this.n++] = x
  }

  /** Exact nearest-rank percentiles (sorts a copy). */
  summary() {
    return percentiles(this.a.subarray(0, this.n))
  }
}

/** Exact nearest-rank percentiles of a Float64Array (or array) of samples, in their unit. */
export function percentiles(xs) {
  const s = Float64Array.from(xs).sort()
  const n = s.length
  if (n === 0) return { n: 0 }
  const q = (p) => s[Math.min(n - 1, Math.max(0, Math.ceil(p * n) - 1))]
  let sum = 0
  for (let i = 0; i < n; i++) sum += s[i]
  return { n, mean: sum / n, min: s[0], p50: q(0.5), p90: q(0.9), p99: q(0.99), p999: q(0.999), max: s[n - 1] }
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** { median, min, max } of the numbers (undefined when there are none). */
export function spread(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x))
  if (v.length === 0) return undefined
  return { median: median(v), min: Math.min(...v), max: Math.max(...v) }
}

export function sh(cmd, argv) {
  try {
    return execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {
    return null
  }
}

export function meminfoKb(key) {
  const m = fs.readFileSync('/proc/meminfo', 'utf8').match(new RegExp(`^${key}:\\s+(\\d+)`, 'm'))
  return m ? Number(m[1]) : null
}

const sleepMs = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)

/**
 * Lets dirty page cache drain before a trial: runs `sync`, then waits (up to
 * `maxWaitMs`) until Dirty + Writeback is below `thresholdKb`. Returns what it saw.
 */
export function drainDirty({ thresholdKb = 4096, maxWaitMs = 10_000 } = {}) {
  const before = (meminfoKb('Dirty') ?? 0) + (meminfoKb('Writeback') ?? 0)
  const t0 = Date.now()
  sh('sync', [])
  let after = (meminfoKb('Dirty') ?? 0) + (meminfoKb('Writeback') ?? 0)
  while (after > thresholdKb && Date.now() - t0 < maxWaitMs) {
    sleepMs(100)
    sh('sync', [])
    after = (meminfoKb('Dirty') ?? 0) + (meminfoKb('Writeback') ?? 0)
  }
  return { dirtyKbBefore: before, dirtyKbAfter: after, drainMs: Date.now() - t0 }
}

/**
 * Load from every process over the next `ms` milliseconds: `cpu`, the fraction of all
 * CPUs busy (not idle or iowait), and `disk`, the fraction of the time the block device
 * `dev` had I/O in flight (io_ticks; null without a device).
 */
export function machineLoad(ms, dev) {
  const sample = () => {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
    const idle = f[3] + (f[4] || 0)
    let ioTicks = null
    if (dev) {
      try {
        ioTicks = Number(fs.readFileSync(`/sys/block/${dev}/stat`, 'utf8').trim().split(/\s+/)[9])
      } catch {}
    }
    return { idle, total: f.slice(0, 8).reduce((a, b) => a + b, 0), ioTicks, at: performance.now() }
  }
  const a = sample()
  sleepMs(ms)
  const b = sample()
  const total = b.total - a.total
  return {
    cpu: total > 0 ? +(1 - (b.idle - a.idle) / total).toFixed(3) : 0,
    disk: a.ioTicks === null || b.ioTicks === null ? null : +Math.min(1, (b.ioTicks - a.ioTicks) / (b.at - a.at)).toFixed(3),
  }
}

const CLK_TCK = Number(sh('getconf', ['CLK_TCK'])) || 100

/** CPU time used by every process on the machine so far (all CPUs, ms), and wall time. */
export function machineCpu() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
  const idle = f[3] + (f[4] || 0)
  // guest time is already counted in user time
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0)
  return { busyMs: ((total - idle) * 1000) / CLK_TCK, at: performance.now() }
}

/** Sectors written to the block device holding `dir` so far (from /sys), or null. */
export function deviceWriteStats(dev) {
  if (!dev) return null
  const s = sh('cat', [`/sys/block/${dev}/stat`])
  if (!s) return null
  const f = s.split(/\s+/).map(Number)
  // Fields (Documentation/block/stat.rst): 4 = write I/Os, 6 = write sectors, 14-15 = flushes, flush ticks.
  return { writeIos: f[4], writeSectors: f[6], flushes: f[15] ?? null, flushTicksMs: f[16] ?? null }
}

/** Short hash of the native addon and dist/*.js: changes whenever either is rebuilt. */
export function buildId(root) {
  const h = crypto.createHash('sha256')
  for (const d of ['native', 'dist']) {
    const dir = path.join(root, d)
    if (!fs.existsSync(dir)) continue
    for (const f of fs.readdirSync(dir).sort()) {
      if (f.endsWith('.node') || f.endsWith('.js') || f.endsWith('.mjs')) h.update(f).update(fs.readFileSync(path.join(dir, f)))
    }
  }
  return h.digest('hex').slice(0, 12)
}

/** The block device name (e.g. `vda`) under a mount source such as /dev/vda or /dev/vda1. */
function blockDevice(source) {
  if (!source || !source.startsWith('/dev/')) return null
  let name = path.basename(fs.realpathSync(source))
  if (fs.existsSync(`/sys/block/${name}`)) return name
  // A partition: its parent holds the queue settings.
  try {
    const parent = path.basename(path.dirname(fs.realpathSync(`/sys/class/block/${name}`)))
    if (fs.existsSync(`/sys/block/${parent}`)) return parent
  } catch {}
  return null
}

export function environment(root, tmp) {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8')
  const model = cpuinfo.match(/^model name\s*:\s*(.*)$/m)
  const flags = cpuinfo.match(/^flags\s*:\s*(.*)$/m)
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
  const nativeDir = path.join(root, 'native')
  const addon = fs.existsSync(nativeDir) ? fs.readdirSync(nativeDir).find((f) => f.endsWith('.node')) : undefined
  const addonPath = addon ? path.join(nativeDir, addon) : null
  const gitStatus = sh('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no'])
  const mount = sh('findmnt', ['-n', '-o', 'SOURCE,FSTYPE,OPTIONS', '--target', tmp])
  const [source, mountFsType, mountOptions] = mount ? mount.split(/\s+/) : []
  const dev = blockDevice(source)
  const q = (f) => (dev ? sh('cat', [`/sys/block/${dev}/queue/${f}`]) : null)
  return {
    cpuModel: model ? model[1].trim() : os.cpus()[0]?.model,
    cores: os.cpus().length,
    virtualized: flags ? /\bhypervisor\b/.test(flags[1]) : null,
    memoryGb: +(os.totalmem() / 2 ** 30).toFixed(1),
    kernel: os.release(),
    loadavg: os.loadavg().map((x) => +x.toFixed(2)),
    tmpDir: tmp,
    fsType: sh('stat', ['-f', '-c', '%T', tmp]),
    mountFsType: mountFsType ?? null,
    mountSource: source ?? null,
    mountOptions: mountOptions ?? null,
    sameDeviceAsRepo: fs.statSync(tmp).dev === fs.statSync(root).dev,
    blockDevice: dev,
    deviceWriteCache: q('write_cache'),
    deviceRotational: q('rotational'),
    deviceScheduler: q('scheduler'),
    node: process.version,
    v8: process.versions.v8,
    seglogVersion: pkg.version,
    gitCommit: sh('git', ['-C', root, 'rev-parse', '--short=12', 'HEAD']),
    gitDirty: gitStatus === null ? null : gitStatus.length > 0,
    buildId: buildId(root),
    addon: addonPath
      ? {
          file: path.relative(root, addonPath),
          sha256: crypto.createHash('sha256').update(fs.readFileSync(addonPath)).digest('hex').slice(0, 16),
          mtime: fs.statSync(addonPath).mtime.toISOString(),
        }
      : null,
  }
}

/** True when `dir` is on a memory-backed file system (durable figures would mean nothing there). */
export function isMemoryFs(dir) {
  const t = spawnSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).stdout?.trim()
  return t === 'tmpfs' || t === 'ramfs'
}

/**
 * Copies dist/ and native/ to a fresh directory under `parent` and returns it: children
 * load seglog from there, so a rebuild by someone else during a run cannot mix builds.
 */
export function snapshotBuild(root, parent = os.tmpdir()) {
  const lib = fs.mkdtempSync(path.join(parent, 'seglog-bench-build-'))
  for (const d of ['dist', 'native']) fs.cpSync(path.join(root, d), path.join(lib, d), { recursive: true })
  // dist/index.js finds the addon through the package root.
  fs.copyFileSync(path.join(root, 'package.json'), path.join(lib, 'package.json'))
  return lib
}

/** Versions of the named packages installed under `nodeModules` (null when missing). */
export function packageVersions(nodeModules, names) {
  const out = {}
  for (const n of names) {
    try {
      out[n] = JSON.parse(fs.readFileSync(path.join(nodeModules, n, 'package.json'), 'utf8')).version
    } catch {
      out[n] = null
    }
  }
  return out
}

/** A run is flagged when other processes kept the CPUs busier than this before it started. */
export const BUSY_WARN = 0.25

/** The command line: `flag('--quick')`, `opt('--trials', '5')` (the value after a name). */
export function cliArgs(args = process.argv.slice(2)) {
  const flag = (name) => args.includes(name)
  const opt = (name, dflt) => {
    const i = args.indexOf(name)
    return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt
  }
  return { args, flag, opt }
}
