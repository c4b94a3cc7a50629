// seglog throughput benchmark, 100-byte raw payloads, volatile (no fsync anywhere).
//
//   npm run bench:log                         (builds first; 5 trials)
//   node benchmark/log-throughput.mjs [--trials N] [--quick] [--only a,b] [--dir PARENT] [--out FILE]
//                                     [--wait-idle SECONDS]
//
// --trials N        trials per workload (default 5; 3 with --quick)
// --quick           3 trials, 500k-record windows: a smoke run, not for quoting
// --only a,b        run some workloads: memcpy, memcpyBulk, append, appendBatch,
//                   records, readBatch, readAsync, get
// --dir PARENT      where the temporary logs go (default os.tmpdir())
// --out FILE        JSON results (default benchmark/results/log-throughput.json)
// --wait-idle S     before each child, wait up to S seconds for the other processes on
//                   the machine to use under 25% of the CPUs (runs that start busier
//                   are flagged either way)
//
// Follows /work/shared/PERFORMANCE.md: every workload x trial runs in a fresh child
// process (this script re-invoked with --child NAME, printing one JSON line);
// workloads are interleaved within each trial and rotated between trials; results
// are checked before timing and every result is consumed; windows span several
// segment rolls; the median and min-max over trials are reported, with a pure-JS
// memcpy reference measured in the same run. Reads run on a log written by the
// same child, closed and reopened (page cache warm).

import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { PAYLOAD_BYTES, fillPayload, payloadFor, checkPayload, embeddedOffset } from './payload.mjs'
import { median, drainDirty, machineLoad, buildId, environment, cliArgs, BUSY_WARN } from './harness.mjs'

const SCRIPT = fileURLToPath(import.meta.url)
const HERE = path.dirname(SCRIPT)
const ROOT = path.join(HERE, '..')

const WORKLOADS = [
  { name: 'memcpy', label: 'JS reference: `Buffer.copy` 100 B into a prefaulted buffer', target: null },
  { name: 'memcpyBulk', label: 'JS reference: `Buffer.copy` in 64 KiB chunks, per 100 B', target: null },
  { name: 'append', label: '`append` (one record per call)', target: 5 },
  { name: 'appendBatch', label: '`appendBatch`, 1000 records per call', target: 20 },
  { name: 'records', label: 'sequential read, `records()` sync iterator', target: 10 },
  { name: 'readBatch', label: 'sequential read, `readBatch(from, {maxRecords: 4096})` loop', target: 10 },
  { name: 'readAsync', label: '`for await (const r of log.read())`', target: null },
  { name: 'get', label: 'random `get(offset)`', target: null },
]

const SIZES = {
  full: { records: 3_000_000, gets: 1_000_000, warmup: 200_000 },
  quick: { records: 500_000, gets: 200_000, warmup: 50_000 },
}


const { flag, opt } = cliArgs()

if (flag('--child')) {
  await child(opt('--child'), {
    records: Number(opt('--records')),
    gets: Number(opt('--gets')),
    warmup: Number(opt('--warmup')),
    dir: opt('--dir'),
  })
} else {
  parent()
}

// ---------------------------------------------------------------------------
// Child: one workload, one trial, one JSON line on stdout.

async function child(name, { records: N, gets: G, warmup: W, dir: parentDir }) {
  const now = () => process.hrtime.bigint()
  const must = (ok, what) => {
    if (!ok) throw new Error(`check failed (${name}): ${what}`)
  }
  // Timed window: wall time and process CPU time (all threads, including seglog's
  // prefault thread), so cost per record is reported too.
  const time = (fn) => {
    const c0 = process.cpuUsage()
    const t0 = now()
    const result = fn()
    const ns = Number(now() - t0)
    const c = process.cpuUsage(c0)
    return { ns, cpuNs: (c.user + c.system) * 1000, result }
  }
  const timeAsync = async (fn) => {
    const c0 = process.cpuUsage()
    const t0 = now()
    const result = await fn()
    const ns = Number(now() - t0)
    const c = process.cpuUsage(c0)
    return { ns, cpuNs: (c.user + c.system) * 1000, result }
  }
  const emit = (ops, m, extra = {}) => {
    process.stdout.write(JSON.stringify({
      workload: name,
      ops,
      ns: m.ns,
      mps: ops / m.ns * 1e3,
      cpuNsPerOp: m.cpuNs / ops,
      maxRssMb: process.resourceUsage().maxRSS / 1024,
      ...extra,
    }) + '\n')
  }

  // A pool of 4096 distinct payloads for the write workloads (no allocation per record).
  const POOL = 4096
  const pool = Array.from({ length: POOL }, (_, i) => payloadFor(i))

  if (name === 'memcpy') {
    const cap = Math.min(N, 4_000_000) * PAYLOAD_BYTES
    const dst = Buffer.allocUnsafeSlow(cap)
    dst.fill(0) // prefault, as seglog's writer has its pages prefaulted
    const copyN = (n) => {
      let pos = 0
      for (let i = 0; i < n; i++) {
        if (pos + PAYLOAD_BYTES > cap) pos = 0
        pos += pool[i & (POOL - 1)].copy(dst, pos)
      }
      return pos
    }
    copyN(W) // warm-up
    for (let i = 0; i < W; i++) must(checkPayload(dst.subarray(i * PAYLOAD_BYTES, (i + 1) * PAYLOAD_BYTES), i & (POOL - 1)), `copy ${i}`)
    const m = time(() => copyN(N))
    must(m.result === (N * PAYLOAD_BYTES) % cap || m.result === cap, `end position ${m.result}`)
    const last = ((N - 1) * PAYLOAD_BYTES) % cap
    must(checkPayload(dst.subarray(last, last + PAYLOAD_BYTES), (N - 1) & (POOL - 1)), 'last copy')
    emit(N, m, { gbps: N * PAYLOAD_BYTES / m.ns })
    return
  }

  if (name === 'memcpyBulk') {
    // Bandwidth of large copies, counted in 100 B record equivalents.
    const CHUNK = 64 << 10
    const cap = Math.min(N, 4_000_000) * PAYLOAD_BYTES
    const src = Buffer.allocUnsafeSlow(CHUNK)
    for (let i = 0; i < CHUNK; i += PAYLOAD_BYTES) fillPayload(src, i, i / PAYLOAD_BYTES)
    const dst = Buffer.allocUnsafeSlow(cap)
    dst.fill(0)
    const total = N * PAYLOAD_BYTES
    const copyBytes = (bytes) => {
      let pos = 0
      for (let done = 0; done < bytes; done += CHUNK) {
        if (pos + CHUNK > cap) pos = 0
        pos += src.copy(dst, pos, 0, Math.min(CHUNK, bytes - done))
      }
      return pos
    }
    copyBytes(W * PAYLOAD_BYTES) // warm-up
    must(Buffer.compare(dst.subarray(0, CHUNK), src) === 0, 'bulk copy content')
    const m = time(() => copyBytes(total))
    const lastLen = total - Math.floor((total - 1) / CHUNK) * CHUNK // bytes of the final copy
    must(Buffer.compare(dst.subarray(m.result - lastLen, m.result), src.subarray(0, lastLen)) === 0, 'bulk copy tail')
    emit(N, m, { gbps: total / m.ns })
    return
  }

  const { Log } = await import('../dist/index.mjs')
  const dir = fs.mkdtempSync(path.join(parentDir, 'seglog-bench-'))
  let log
  try {
    log = await Log.open(dir, { durability: 'none' })

    if (name === 'append' || name === 'appendBatch') {
      const B = 1000
      const batches = Array.from({ length: POOL / 1024 }, (_, j) => pool.slice(j * 1024, j * 1024 + B))
      const appendN = (base, n) => {
        // Returns the sum of the returned offsets, which must equal the expected sum.
        let sum = 0
        if (name === 'append') {
          for (let i = 0; i < n; i++) sum += log.append(pool[(base + i) & (POOL - 1)])
        } else {
          for (let i = 0; i < n; i += B) sum += log.appendBatch(batches[((base + i) / B) & 3])
        }
        return sum
      }
      const expectedPayload = (o) => (name === 'append' ? pool[o & (POOL - 1)] : batches[Math.floor(o / B) & 3][o % B])
      // Warm-up doubling as a correctness check: append, then read back and compare.
      must(appendN(0, W) === (name === 'append' ? W * (W - 1) / 2 : sumOfBatchStarts(0, W, B)), 'warm-up offsets')
      let o = 0
      for (const r of log.records()) {
        must(r.offset === o && Buffer.compare(r.value, expectedPayload(o)) === 0, `warm-up record ${o}`)
        o++
      }
      must(o === W, `read back ${o} of ${W} warm-up records`)
      const segs0 = log.segments().length
      const m = time(() => appendN(W, N))
      must(m.result === (name === 'append' ? (W + N) * (W + N - 1) / 2 - W * (W - 1) / 2 : sumOfBatchStarts(W, N, B)), 'timed offsets')
      must(log.nextOffset === W + N, `nextOffset ${log.nextOffset}`)
      // Spot-check records written inside the timed window.
      for (let i = 0; i < 1000; i++) {
        const off = W + Math.floor((i * N) / 1000)
        const r = log.get(off)
        must(r && r.offset === off && Buffer.compare(r.value, expectedPayload(off)) === 0, `record ${off} after timing`)
      }
      const segs = log.segments().length
      emit(N, m, { segments: segs, segmentRolls: segs - segs0 })
      return
    }

    // Read workloads: write N checkable records (untimed), close, reopen.
    const B = 1000
    const staging = Buffer.allocUnsafeSlow(B * PAYLOAD_BYTES)
    const views = Array.from({ length: B }, (_, i) => staging.subarray(i * PAYLOAD_BYTES, (i + 1) * PAYLOAD_BYTES))
    for (let base = 0; base < N; base += B) {
      const n = Math.min(B, N - base)
      for (let i = 0; i < n; i++) fillPayload(staging, i * PAYLOAD_BYTES, base + i)
      must(log.appendBatch(n === B ? views : views.slice(0, n)) === base, `setup batch ${base}`)
    }
    await log.close()
    log = await Log.open(dir, { durability: 'none' })
    must(log.firstOffset === 0 && log.nextOffset === N, 'reopened log range')
    const segments = log.segments().length

    if (name === 'get') {
      // Warm-up + full check on random offsets, then the timed run on others.
      let x = 0x2545f491
      const offsets = new Uint32Array(G + W)
      for (let i = 0; i < offsets.length; i++) {
        x ^= x << 13; x ^= x >>> 17; x ^= x << 5
        offsets[i] = (x >>> 0) % N
      }
      for (let i = G; i < G + W; i++) {
        const r = log.get(offsets[i])
        must(r && r.offset === offsets[i] && checkPayload(r.value, offsets[i]), `get(${offsets[i]})`)
      }
      must(log.get(N) === undefined, 'get(nextOffset) is undefined')
      const m = time(() => {
        let bad = 0
        for (let i = 0; i < G; i++) {
          const o = offsets[i]
          if (embeddedOffset(log.get(o).value) !== o) bad++
        }
        return bad
      })
      must(m.result === 0, `${m.result} wrong records in the timed window`)
      emit(G, m, { segments })
      return
    }

    // Sequential scans. Warm-up reads the first W records with the same API and checks
    // every byte; the timed pass reads all N, checking each offset and the offset
    // embedded in the payload (and consuming every record).
    const scanners = {
      records: (from, to, full) => {
        let e = from
        let bad = 0
        for (const r of log.records({ from, to })) {
          if (r.offset !== e || (full ? !checkPayload(r.value, e) : embeddedOffset(r.value) !== e)) bad++
          e++
        }
        return { n: e - from, bad }
      },
      readBatch: (from, to, full) => {
        let e = from
        let bad = 0
        while (e < to) {
          const rs = log.readBatch(e, { maxRecords: Math.min(4096, to - e) })
          if (rs.length === 0) break
          for (let i = 0; i < rs.length; i++) {
            const r = rs[i]
            if (r.offset !== e || (full ? !checkPayload(r.value, e) : embeddedOffset(r.value) !== e)) bad++
            e++
          }
        }
        return { n: e - from, bad }
      },
      readAsync: async (from, to, full) => {
        let e = from
        let bad = 0
        for await (const r of log.read({ from, to })) {
          if (r.offset !== e || (full ? !checkPayload(r.value, e) : embeddedOffset(r.value) !== e)) bad++
          e++
        }
        return { n: e - from, bad }
      },
    }
    const scan = scanners[name]
    if (!scan) throw new Error(`unknown workload ${name}`)
    const w = await scan(0, W, true)
    must(w.n === W && w.bad === 0, `warm-up read ${w.n} records, ${w.bad} bad`)
    const m = await timeAsync(() => scan(0, N, false))
    must(m.result.n === N && m.result.bad === 0, `timed read ${m.result.n} records, ${m.result.bad} bad`)
    emit(N, m, { segments })
  } finally {
    if (log) await log.close().catch(() => {})
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

/** Sum of the first offsets appendBatch returns for records [from, from + n) in batches of b. */
function sumOfBatchStarts(from, n, b) {
  let s = 0
  for (let o = from; o < from + n; o += b) s += o
  return s
}

// ---------------------------------------------------------------------------
// Parent: environment, trials, table, JSON.

function parent() {
  const quick = flag('--quick')
  const trials = Number(opt('--trials', quick ? 3 : 5))
  const sizes = quick ? SIZES.quick : SIZES.full
  const only = opt('--only') ? opt('--only').split(',') : null
  const workloads = only ? WORKLOADS.filter((w) => only.includes(w.name)) : WORKLOADS
  const tmp = path.resolve(opt('--dir', os.tmpdir()))
  const out = path.resolve(opt('--out', path.join(HERE, 'results', 'log-throughput.json')))
  const waitIdleS = Number(opt('--wait-idle', 0))
  if (!Number.isInteger(trials) || trials < 1) fail('--trials must be a positive integer')
  if (!(waitIdleS >= 0)) fail('--wait-idle takes a number of seconds')
  if (only && workloads.length !== only.length) fail(`--only: known workloads are ${WORKLOADS.map((w) => w.name).join(', ')}`)
  if (!fs.existsSync(path.join(ROOT, 'dist', 'index.mjs'))) fail('dist/ is missing: run `npm run build` first')
  fs.mkdirSync(tmp, { recursive: true })

  const env = environment(ROOT, tmp)
  const log = (s) => process.stderr.write(s + '\n')
  log(`seglog ${env.seglogVersion} (${env.gitCommit}${env.gitDirty ? ', dirty tree' : ''}) on ${env.cpuModel}, ${env.cores} cores, ` +
    `Linux ${env.kernel}, ${env.fsType} at ${tmp}, Node ${env.node}`)
  log(`${trials} trials x ${workloads.length} workloads, ${sizes.records.toLocaleString('en-US')} records per window ` +
    `(${sizes.gets.toLocaleString('en-US')} for get), one child process each`)

  const started = Date.now()
  const runs = []
  const failures = []
  for (let t = 0; t < trials; t++) {
    // Interleave workloads, rotating the order so none always runs first or last.
    const order = workloads.map((_, i) => workloads[(i + t) % workloads.length])
    for (const w of order) {
      // Write back dirty page cache an earlier child left (over 64 MiB), without waiting for it to settle.
      const dirtyKb = drainDirty({ thresholdKb: 64 * 1024, maxWaitMs: 0 }).dirtyKbBefore
      let busy = machineLoad(250).cpu
      for (const until = Date.now() + waitIdleS * 1000; busy > BUSY_WARN && Date.now() < until; ) busy = machineLoad(250).cpu
      const cargs = [SCRIPT, '--child', w.name, '--records', String(sizes.records), '--gets', String(sizes.gets),
        '--warmup', String(sizes.warmup), '--dir', tmp]
      const p = spawnSync(process.execPath, cargs, { encoding: 'utf8', timeout: 180_000, maxBuffer: 1 << 20 })
      const lines = (p.stdout || '').trim().split('\n').filter(Boolean)
      let r
      try {
        r = JSON.parse(lines[lines.length - 1])
      } catch {}
      if (p.status !== 0 || !r) {
        const why = p.error ? String(p.error) : `exit ${p.status}${p.signal ? ` signal ${p.signal}` : ''}: ${(p.stderr || '').trim().split('\n').slice(0, 6).join(' | ')}`
        failures.push({ trial: t + 1, workload: w.name, error: why })
        log(`  trial ${t + 1} ${w.name.padEnd(11)} FAILED ${why}`)
        continue
      }
      r.trial = t + 1
      r.dirtyKbBefore = dirtyKb
      r.cpuBusyBefore = busy
      r.buildId = buildId(ROOT)
      runs.push(r)
      log(`  trial ${t + 1} ${w.name.padEnd(11)} ${r.mps.toFixed(2).padStart(7)} M/s  ` +
        `(${(r.ns / 1e6).toFixed(0)} ms window, ${r.cpuNsPerOp.toFixed(0)} ns CPU/op${r.segmentRolls !== undefined ? `, ${r.segmentRolls} segment rolls` : ''})` +
        (busy > BUSY_WARN ? `  [machine ${(busy * 100).toFixed(0)}% busy before start]` : ''))
    }
  }

  const summary = {}
  for (const w of workloads) {
    const rs = runs.filter((r) => r.workload === w.name)
    if (rs.length === 0) continue
    const mps = rs.map((r) => r.mps)
    summary[w.name] = {
      label: w.label,
      trials: rs.length,
      medianMps: median(mps),
      minMps: Math.min(...mps),
      maxMps: Math.max(...mps),
      targetMps: w.target,
      ratioToTarget: w.target ? median(mps) / w.target : null,
      medianCpuNsPerOp: median(rs.map((r) => r.cpuNsPerOp)),
      medianMaxRssMb: median(rs.map((r) => r.maxRssMb)),
      medianWindowMs: median(rs.map((r) => r.ns / 1e6)),
      ...(rs[0].segments !== undefined ? { segments: rs[0].segments } : {}),
      ...(rs[0].segmentRolls !== undefined ? { medianSegmentRolls: median(rs.map((r) => r.segmentRolls)) } : {}),
      ...(rs[0].gbps !== undefined ? { medianGBps: median(rs.map((r) => r.gbps)) } : {}),
    }
  }
  const ref = summary.memcpy ? summary.memcpy.medianMps : null
  for (const s of Object.values(summary)) s.ratioToMemcpy = ref ? s.medianMps / ref : null

  // Markdown table on stdout.
  const f2 = (x) => x.toFixed(2)
  const rows = [
    '| workload | median M records/s | min-max | target M/s | ratio to target | ratio to JS memcpy | CPU ns/record |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ]
  for (const w of workloads) {
    const s = summary[w.name]
    if (!s) {
      rows.push(`| ${w.label} | failed | | ${w.target ?? '-'} | | | |`)
      continue
    }
    const label = s.medianGBps !== undefined ? `${w.label} (${s.medianGBps.toFixed(1)} GB/s)` : w.label
    rows.push(`| ${label} | ${f2(s.medianMps)} | ${f2(s.minMps)}-${f2(s.maxMps)} | ${w.target ?? '-'} | ` +
      `${s.ratioToTarget === null ? '-' : f2(s.ratioToTarget)} | ${s.ratioToMemcpy === null ? '-' : s.ratioToMemcpy.toFixed(3)} | ` +
      `${s.medianCpuNsPerOp.toFixed(0)} |`)
  }
  const elapsedS = (Date.now() - started) / 1000
  console.log('')
  console.log(`seglog ${env.seglogVersion} log throughput, ${PAYLOAD_BYTES} B raw payloads, volatile (no fsync); ` +
    `${trials} trials, one process per workload x trial; median over trials`)
  console.log(`${env.cpuModel}, ${env.cores} cores, Linux ${env.kernel}, ${env.fsType} (${env.mountFsType ?? '?'}), Node ${env.node}, ` +
    `commit ${env.gitCommit}${env.gitDirty ? ' + uncommitted changes' : ''}`)
  console.log(`windows: ${sizes.records.toLocaleString('en-US')} records (appends span ~${summary.append?.medianSegmentRolls ?? summary.appendBatch?.medianSegmentRolls ?? '?'} segment rolls; ` +
    `reads scan ${summary.records?.segments ?? summary.readBatch?.segments ?? '?'} segments, page cache warm); ` +
    `get: ${sizes.gets.toLocaleString('en-US')} uniform random offsets`)
  console.log('')
  console.log(rows.join('\n'))
  console.log('')
  const builds = [...new Set(runs.map((r) => r.buildId))]
  if (builds.length > 1 || (builds.length === 1 && builds[0] !== env.buildId)) {
    console.log(`WARNING: the addon or dist/ changed during the run (builds ${[env.buildId, ...builds].filter((b, i, a) => a.indexOf(b) === i).join(', ')}); ` +
      'the runs mix builds (each run records its buildId in the JSON).')
  }
  const contended = runs.filter((r) => r.cpuBusyBefore > BUSY_WARN).length
  console.log(`${runs.length} runs, ${failures.length} failed, ${elapsedS.toFixed(0)} s; load average at start ${env.loadavg.join(' ')}`)
  if (contended > 0) {
    console.log(`WARNING: ${contended} of ${runs.length} runs started while other processes kept the CPUs over ` +
      `${BUSY_WARN * 100}% busy (sampled for 250 ms before each child); figures are pessimistic, rerun on an idle machine.`)
  }

  const result = {
    benchmark: 'log-throughput',
    date: new Date(started).toISOString(),
    elapsedS,
    env,
    config: { trials, quick, waitIdleS, payloadBytes: PAYLOAD_BYTES, durability: 'volatile (no fsync)', ...sizes, tmpDir: tmp },
    summary,
    contendedRuns: runs.filter((r) => r.cpuBusyBefore > BUSY_WARN).length,
    runs,
    failures,
  }
  fs.mkdirSync(path.dirname(out), { recursive: true })
  fs.writeFileSync(out, JSON.stringify(result, null, 2) + '\n')
  console.log(`results: ${path.relative(process.cwd(), out) || out}`)
  if (failures.length > 0) process.exit(1)
}

function fail(msg) {
  console.error(msg)
  process.exit(2)
}
