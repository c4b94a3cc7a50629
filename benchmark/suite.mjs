// `npm run bench`: seglog side by side with its peers, one child process per
// library x workload x trial.
//
//   npm run bench [-- --quick] [-- --trials N] [-- --only a,b] [-- --dir PARENT]
//
// --quick      a smoke run (under 2 minutes): 1 trial, short windows, small data sets,
//              a 32 MiB log for open/recovery. Not for quoting.
// --trials N   trials per library x workload (default 5)
// --only a,b   only the workloads or libraries whose id contains one of the substrings
//              (workloads: append-100B, append-batch-100B, append-1KiB, append-64KiB,
//              durable-1, durable-16, durable-256, scan, get, open-1GiB, kv-put, kv-get;
//              libraries: seglog, seglog-js, hand-rolled, lmdb, better-sqlite3,
//              classic-level, hypercore, memcpy). seglog is always kept: ratios need it.
// --report F  only rewrite latest.md and the charts from results JSON F
// --results D  write latest.json, latest.md and the charts to D (default benchmark/results)
// --dir PARENT where data goes (default os.tmpdir(), unless memory-backed: then
//              benchmark/.tmp on the repo's disk)
//
// The peers live in benchmark/package.json and are installed on first use
// (`npm install --prefix benchmark`), not with seglog itself.
//
// Method (/work/shared/PERFORMANCE.md): each child checks its results before timing
// (reads back and compares what it wrote, counts what it reads) and consumes every
// result; libraries interleave within each workload and their order rotates between
// trials; before each child the parent writes back dirty pages and samples the
// machine's load; the median and min-max over trials are reported, and every ratio
// compares medians measured in this run. Children load seglog from a snapshot of dist/
// and native/ taken at the start. Read workloads run on data sets written once per run
// (page cache warm); open-1GiB opens a fresh copy of a log whose writer was killed
// with SIGKILL after writing 1 GiB of 100 B records.
//
// Output: benchmark/results/latest.json (every trial and the environment),
// latest.md (tables and goals), <family>.svg charts.

import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { drainDirty, machineLoad, environment, isMemoryFs, snapshotBuild, packageVersions, buildId, cliArgs, BUSY_WARN } from './harness.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.join(HERE, '..')
const CHILD = path.join(HERE, 'suite', 'child.mjs')
const RESULTS = path.resolve(process.argv.includes('--results') ? process.argv[process.argv.indexOf('--results') + 1] : path.join(HERE, 'results'))

const { flag, opt } = cliArgs()
const say = (s) => process.stderr.write(s + '\n')

function fail(msg) {
  console.error(msg)
  process.exit(2)
}

/** Installs benchmark/package.json's peers on first use (or when a required one is missing). */
function ensurePeers() {
  const { dependencies } = JSON.parse(fs.readFileSync(path.join(HERE, 'package.json'), 'utf8'))
  const installed = (name) => fs.existsSync(path.join(HERE, 'node_modules', name, 'package.json'))
  if (Object.keys(dependencies).every(installed)) return
  say('installing the peers (benchmark/package.json) with `npm install --prefix benchmark` ...')
  const p = spawnSync('npm', ['install', '--prefix', HERE, '--no-audit', '--no-fund'], { stdio: ['ignore', 2, 2] })
  if (p.status !== 0) fail('npm install --prefix benchmark failed')
}

ensurePeers()
const { LIBRARIES } = await import('./suite/peers.mjs')
const { WORKLOADS, SIZES } = await import('./suite/workloads.mjs')
const { summarize, evaluateGoals, markdown, stdoutSummary, charts } = await import('./suite/report.mjs')

// --report FILE: rewrite latest.md and the charts from a results JSON, running nothing.
if (opt('--report')) {
  const result = JSON.parse(fs.readFileSync(opt('--report'), 'utf8'))
  writeReports(result)
  process.exit(0)
}

const quick = flag('--quick')
const trials = Number(opt('--trials', quick ? 1 : 5))
if (!Number.isInteger(trials) || trials < 1) fail('--trials takes a positive integer')
const size = quick ? 'quick' : 'full'
const sizes = SIZES[size]
const only = opt('--only') ? opt('--only').split(',').filter(Boolean) : null
const matches = (id) => !only || only.some((s) => id.includes(s))
// A filter that names no workload keeps them all; likewise for libraries.
let workloads = WORKLOADS.filter((w) => matches(w.id))
if (workloads.length === 0) workloads = WORKLOADS
let libraries = LIBRARIES.filter((l) => matches(l.id))
if (libraries.length === 0) libraries = LIBRARIES
if (!libraries.some((l) => l.id === 'seglog')) libraries.unshift(LIBRARIES[0])
if (!fs.existsSync(path.join(ROOT, 'dist', 'index.mjs'))) fail('dist/ is missing: run `npm run build` first')

let tmpParent = opt('--dir')
if (tmpParent === undefined) tmpParent = isMemoryFs(os.tmpdir()) ? path.join(HERE, '.tmp') : os.tmpdir()
fs.mkdirSync(tmpParent, { recursive: true })
if (isMemoryFs(tmpParent)) fail(`${tmpParent} is memory-backed: durable figures would mean nothing; pass --dir on a disk`)
const runDir = fs.mkdtempSync(path.join(path.resolve(tmpParent), 'seglog-suite-'))
const lib = snapshotBuild(ROOT, runDir)

const env = environment(ROOT, runDir)
env.benchBuildId = buildId(lib)
env.libraries = packageVersions(path.join(HERE, 'node_modules'), ['lmdb', 'better-sqlite3', 'classic-level', 'hypercore', 'crc-32', 'mitata'])
env.sqliteVersion = sqliteVersion()
say(`seglog ${env.seglogVersion} (${env.gitCommit}${env.gitDirty ? ', dirty tree' : ''}) on ${env.cpuModel}, ${env.cores} cores, ` +
  `Linux ${env.kernel}, ${env.mountFsType} on ${env.mountSource} at ${runDir}, Node ${env.node}`)
say(`peers: ${Object.entries(env.libraries).map(([k, v]) => `${k} ${v ?? 'missing'}`).join(', ')}; SQLite ${env.sqliteVersion ?? '?'}`)

const started = Date.now()
const runs = []
const failures = []
const unavailable = {} // `${library}` or `${library}/${workload}` -> message

function child(argv, timeoutMs) {
  const p = spawnSync(process.execPath, [CHILD, '--lib', lib, '--size', size, ...argv], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 4 << 20 })
  const lines = (p.stdout || '').trim().split('\n').filter(Boolean)
  let out
  try {
    out = JSON.parse(lines[lines.length - 1])
  } catch {}
  const error = p.error ? String(p.error) : `exit ${p.status}${p.signal ? ` signal ${p.signal}` : ''}: ${(p.stderr || '').trim().split('\n').slice(0, 8).join(' | ')}`
  return { status: p.status, signal: p.signal, out, error }
}

// 1. Probes: which libraries load and open at all.
for (const l of libraries) {
  const dir = fs.mkdtempSync(path.join(runDir, `probe-${l.id}-`))
  const r = child(['--library', l.id, '--probe', dir], 60_000)
  fs.rmSync(dir, { recursive: true, force: true })
  if (r.status !== 0 || !r.out) unavailable[l.id] = `probe failed: ${r.error}`
  else if (r.out.unavailable) unavailable[l.id] = r.out.unavailable
  else {
    if (r.out.log?.unavailable) unavailable[`${l.id}/log`] = r.out.log.unavailable
    if (r.out.kv?.unavailable) unavailable[`${l.id}/kv`] = r.out.kv.unavailable
  }
}
for (const [k, v] of Object.entries(unavailable)) say(`unavailable: ${k}: ${v}`)

const naReason = (l, w) => l.notFor(w)
const unavailableReason = (l, w) => unavailable[l.id] ?? unavailable[`${l.id}/${w.kind === 'kv' ? 'kv' : 'log'}`] ?? unavailable[`${l.id}/${w.id}`]
const cells = (w) => libraries.filter((l) => !naReason(l, w) && !unavailableReason(l, w))

// 2. Data sets written once per run: records for scan/get, keys for kv-get, crash images for open.
const datasets = {}
const setups = [
  { kind: 'records', needs: (w) => w.kind === 'scan' || w.kind === 'get' },
  { kind: 'kv', needs: (w) => w.kind === 'kv' && w.op === 'get' },
  { kind: 'image', needs: (w) => w.kind === 'open' },
]
for (const s of setups) {
  const ws = workloads.filter(s.needs)
  const libs = [...new Set(ws.flatMap(cells))]
  for (const l of libs) {
    const dir = path.join(runDir, 'data', `${l.id}-${s.kind}`)
    fs.mkdirSync(path.dirname(dir), { recursive: true })
    const t0 = Date.now()
    const r = child(['--library', l.id, '--setup', s.kind, '--dir', dir], 900_000)
    const ok = s.kind === 'image' ? r.signal === 'SIGKILL' && fs.existsSync(`${dir}.json`) : r.status === 0 && r.out && !r.out.unavailable
    if (!ok) {
      const why = r.out?.unavailable ?? r.error
      for (const w of ws) unavailable[`${l.id}/${w.id}`] = `setup (${s.kind}) failed: ${why}`
      say(`setup ${s.kind} for ${l.id} FAILED: ${why}`)
      continue
    }
    datasets[`${l.id}/${s.kind}`] = dir
    say(`setup ${s.kind.padEnd(7)} ${l.id.padEnd(14)} ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  }
}
drainDirty({ maxWaitMs: 60_000 })

// 3. Trials: workloads in order, libraries interleaved and rotated per trial.
const fmt = (x) => (x >= 1e6 ? `${(x / 1e6).toFixed(2)} M` : x >= 1e3 ? `${(x / 1e3).toFixed(1)} k` : x.toFixed(1))
for (let t = 1; t <= trials; t++) {
  for (const w of workloads) {
    const libs = cells(w)
    const order = libs.map((_, i) => libs[(i + t - 1) % libs.length])
    for (const l of order) {
      if (unavailableReason(l, w)) continue
      const trialDir = path.join(runDir, `t${t}-${w.id}-${l.id}`)
      const argv = ['--library', l.id, '--workload', w.id, '--trial', String(t), '--dir', trialDir]
      if (w.kind === 'scan' || w.kind === 'get') argv.push('--dataset', datasets[`${l.id}/records`])
      if (w.kind === 'kv' && w.op === 'get') argv.push('--dataset', datasets[`${l.id}/kv`])
      if (w.kind === 'open') {
        const image = datasets[`${l.id}/image`]
        fs.cpSync(image, trialDir, { recursive: true })
        argv.push('--image', image)
      } else {
        fs.mkdirSync(trialDir, { recursive: true })
      }
      // Durable and open cases wait for writeback to settle; the others only flush what piled up.
      const drain = w.durable || w.kind === 'open' ? drainDirty({ maxWaitMs: 30_000 }) : drainDirty({ thresholdKb: 256 * 1024, maxWaitMs: 5_000 })
      const load = machineLoad(quick ? 50 : 100)
      const t0 = Date.now()
      const r = child(argv, w.kind === 'open' ? 300_000 : 120_000)
      const childMs = Date.now() - t0
      fs.rmSync(trialDir, { recursive: true, force: true })
      if (r.out?.unavailable) {
        unavailable[`${l.id}/${w.id}`] = r.out.unavailable
        say(`  trial ${t} ${w.id.padEnd(17)} ${l.id.padEnd(14)} unavailable: ${r.out.unavailable}`)
        continue
      }
      if (r.status !== 0 || !r.out) {
        failures.push({ trial: t, workload: w.id, library: l.id, error: r.error })
        say(`  trial ${t} ${w.id.padEnd(17)} ${l.id.padEnd(14)} FAILED ${r.error}`)
        continue
      }
      const run = { ...r.out, trial: t, childMs, dirtyKbBefore: drain.dirtyKbBefore, cpuBusyBefore: load.cpu, diskBusyBefore: load.disk }
      runs.push(run)
      const figure = w.lowerIsBetter ? `${run.ms.toFixed(1)} ms` : `${fmt(run.rate)} ${w.unit}`
      say(`  trial ${t} ${w.id.padEnd(17)} ${l.id.padEnd(14)} ${figure.padStart(16)}` +
        (run.ackMs ? `  ack p50 ${run.ackMs.p50.toFixed(2)} ms p99 ${run.ackMs.p99.toFixed(2)} ms` : '') +
        (load.cpu > BUSY_WARN ? `  [machine ${(load.cpu * 100).toFixed(0)}% busy before start]` : ''))
    }
  }
}
fs.rmSync(runDir, { recursive: true, force: true })

// 4. Summaries, goals, reports.
const elapsedS = (Date.now() - started) / 1000
const summary = summarize(workloads, libraries, runs, (l, w) => naReason(l, w) ? { na: naReason(l, w) } : unavailableReason(l, w) ? { unavailable: unavailableReason(l, w) } : null)
const goals = evaluateGoals(summary)
const config = { quick, trials, size, ...sizes, only, busyWarn: BUSY_WARN }
const result = { benchmark: 'suite', date: new Date(started).toISOString(), elapsedS, env, config, workloads, libraries: libraries.map((l) => ({ id: l.id, label: l.label })), summary, goals, unavailable, failures, runs }
fs.mkdirSync(RESULTS, { recursive: true })
fs.writeFileSync(path.join(RESULTS, 'latest.json'), JSON.stringify(result, null, 2) + '\n')
writeReports(result)
console.log(stdoutSummary(result))
console.log(`results: ${path.relative(process.cwd(), RESULTS) || '.'}/latest.json, latest.md, ${Object.keys(charts(result)).join(', ')}; ${elapsedS.toFixed(0)} s`)
if (failures.length > 0) process.exit(1)

function writeReports(result) {
  fs.writeFileSync(path.join(RESULTS, 'latest.md'), markdown(result))
  for (const [file, svg] of Object.entries(charts(result))) fs.writeFileSync(path.join(RESULTS, file), svg)
}

function sqliteVersion() {
  const p = spawnSync(process.execPath, ['-e', "try{const D=require('better-sqlite3');console.log(new D(':memory:').prepare('select sqlite_version()').pluck().get())}catch{}"], { cwd: HERE, encoding: 'utf8' })
  return p.stdout.trim() || null
}
