// One child process of `npm run bench`: one library x one workload x one trial (or a
// setup step, or a probe), one JSON line on stdout. Run by benchmark/suite.mjs:
//
//   node child.mjs --library ID --lib SNAPSHOT --size full|quick --trial N
//        (--workload ID --dir DIR [--dataset DIR] [--image DIR] | --setup records|kv|image --dir DIR | --probe DIR)
//
// A library that cannot be loaded or opened (a peer that did not install, seglog's
// pure-JS engine or Store not in this build) prints { unavailable: message } and exits 0.

import fs from 'node:fs'
import path from 'node:path'
import { cliArgs } from '../harness.mjs'
import { libraryById } from './peers.mjs'
import { workloadById, SIZES, Unavailable, runAppend, runDurable, runScan, runGet, runOpen, runKv, buildRecords, buildKv, buildImage } from './workloads.mjs'

const { opt } = cliArgs()

const RUNNERS = { append: runAppend, durable: runDurable, scan: runScan, get: runGet, open: runOpen, kv: runKv }

const print = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

/** Errors opening an optional library (or seglog's coming pure-JS engine and Store) mean "unavailable". */
function optionalOpen(libId, kind) {
  return libId === 'seglog-js' || (libId === 'seglog' && kind === 'kv') || (libId !== 'seglog' && libId !== 'hand-rolled')
}

async function main() {
  const libId = opt('--library')
  const lib = libraryById(libId)
  if (!lib) throw new Error(`unknown library ${libId}`)
  const sizes = SIZES[opt('--size') ?? 'full']
  const ctx = { lib: opt('--lib'), sizes, dir: opt('--dir'), dataset: opt('--dataset'), image: opt('--image'), trial: Number(opt('--trial') ?? 0) }

  let api
  try {
    api = await lib.adapter.open(ctx)
  } catch (err) {
    return print({ unavailable: `cannot load: ${err.message}` })
  }
  const guard = (kind) => {
    if (!optionalOpen(libId, kind)) return api
    const wrap = (f) => async (...a) => {
      try {
        return await f(...a)
      } catch (err) {
        throw new Unavailable(`cannot open: ${err.message}`)
      }
    }
    return { ...api, openLog: api.openLog && wrap(api.openLog), openKv: api.openKv && wrap(api.openKv) }
  }

  try {
    const probe = opt('--probe')
    if (probe) {
      // Opens and closes an empty log (and store), so a missing engine shows before any trial.
      const kinds = { log: null, kv: null }
      if (api.openLog) kinds.log = await tryOpen(() => guard('log').openLog(path.join(probe, 'log'), { durable: false }))
      if (api.openKv) kinds.kv = await tryOpen(() => guard('kv').openKv(path.join(probe, 'kv')))
      return print({ probe: libId, ...kinds })
    }
    const setup = opt('--setup')
    if (setup === 'records') return print(await buildRecords(guard('log'), ctx.dir, sizes.readRecords))
    if (setup === 'kv') return print(await buildKv(guard('kv'), ctx.dir, sizes.kvKeys))
    if (setup === 'image') return await buildImage(guard('log'), ctx.dir, sizes.imageBytes)

    const w = workloadById(opt('--workload'))
    if (!w) throw new Error(`unknown workload ${opt('--workload')}`)
    print(await RUNNERS[w.kind](w, libId, guard(w.kind), ctx))
  } catch (err) {
    if (err instanceof Unavailable) return print({ unavailable: err.message })
    throw err
  }
}

async function tryOpen(open) {
  try {
    const h = await open()
    await h.close()
    return 'ok'
  } catch (err) {
    return { unavailable: err.message }
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`${err && err.stack ? err.stack : err}\n`)
    process.exit(1)
  },
)
