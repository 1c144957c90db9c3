// End-to-end: Hearth as a cluster. Two control plane replicas (`hearth server`) share one
// PostgreSQL database; three agents (`hearth agent`) each run in a network namespace of
// their own, as hosts on a network: their own address, their own ports, their own nftables
// and sandbox slots, reaching the replicas and an S3-compatible server (e2e/s3server,
// gofakes3) only through a veth, as a remote machine would. The agents share paused
// sandboxes through that S3 server (`--artifacts s3://…`) and heartbeat to both replicas
// (`--control-plane URL1,URL2`). Driven with the published e2b SDK, through both replicas:
//   a. 30 sandboxes created through the replicas in turn spread over the three agents;
//   b. one replica killed with SIGKILL: every sandbox still answers through the other, and
//      the agents keep their heartbeats going to it;
//   c. 10 sandboxes paused on one agent, that agent killed with SIGKILL: Sandbox.connect
//      resumes them on the other agents with their files and a background process;
//   d. an agent drained: its running sandboxes pause and resume on the others;
//   e. short timeouts with both replicas running act exactly once: the replicas'
//      /metrics timeout counters add up to the number of sandboxes.
//
// Network (10.207.0.0/16): an interface of its own in the root namespace holds the replicas'
// and the S3 server's addresses (10.207.0.1-3); agent i lives in netns hclh<i> behind a
// veth, 10.207.<i>.2/30, default route through 10.207.<i>.1. Sandbox slots: prefixes
// hcl1-hcl3, pools 10.204-10.206.0.0/16.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { Sandbox } from 'e2b'
import { Proc, dataDir, testKey, waitFor, hearthBin, ownDatabase } from './harness.mjs'

const pgURL = process.env.HEARTH_E2E_DATABASE_URL
const s3Bin = process.env.HEARTH_E2E_GOFAKES3
const skip = !pgURL ? 'HEARTH_E2E_DATABASE_URL not set' : !s3Bin ? 'HEARTH_E2E_GOFAKES3 not set (scripts/e2e.sh builds e2e/s3server)' : false

const SANDBOXES = 30
const PAUSED = 10
const TIMEOUTS = 10
const token = 'e2e-cluster-agent-token'
const hdr = { 'X-API-Key': testKey }

const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] })
const quiet = (f) => { try { f() } catch {} }

// The cluster's network; every name and address is this suite's own.
const net = {
  dummy: 'hclcp0',
  replicas: ['10.207.0.1', '10.207.0.2'],
  s3: '10.207.0.3',
  hosts: [1, 2, 3].map((i) => ({ ns: `hclh${i}`, veth: `hclv${i}`, gw: `10.207.${i}.1`, addr: `10.207.${i}.2`, prefix: `hcl${i}`, pool: `10.${203 + i}.0.0/16`, id: `cluster-${i}` })),
}

function networkDown() {
  quiet(() => ip('link', 'del', net.dummy))
  for (const h of net.hosts) {
    quiet(() => ip('link', 'del', h.veth))
    quiet(() => ip('netns', 'del', h.ns))
  }
}

function networkUp() {
  networkDown()
  // A veth pair stands in for a dummy interface (the test machines' kernels lack that module).
  ip('link', 'add', net.dummy, 'type', 'veth', 'peer', 'name', `${net.dummy}p`)
  for (const a of [...net.replicas, net.s3]) ip('addr', 'add', `${a}/32`, 'dev', net.dummy)
  ip('link', 'set', net.dummy, 'up')
  ip('link', 'set', `${net.dummy}p`, 'up')
  for (const h of net.hosts) {
    ip('netns', 'add', h.ns)
    ip('link', 'add', h.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns)
    ip('addr', 'add', `${h.gw}/30`, 'dev', h.veth)
    ip('link', 'set', h.veth, 'up')
    ip('-n', h.ns, 'addr', 'add', `${h.addr}/30`, 'dev', 'eth0')
    ip('-n', h.ns, 'link', 'set', 'eth0', 'up')
    ip('-n', h.ns, 'link', 'set', 'lo', 'up')
    ip('-n', h.ns, 'route', 'add', 'default', 'via', h.gw)
  }
}

// pool runs fn over items, at most n at a time, and returns the results in order.
async function pool(items, n, fn) {
  const out = new Array(items.length)
  let next = 0
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i], i)
    }
  }))
  return out
}

describe('cluster: two control plane replicas on PostgreSQL, three agents in network namespaces, S3 artifacts', { skip }, () => {
  const procs = []
  const track = (p) => { procs.push(p); return p }
  const replicas = [] // { api, proxy, args, proc }
  const agents = {} // host ID -> { proc, dir, start }
  const created = new Set()
  let s3
  let t0

  // Connection options naming replica i (the SDK reads none of E2B_* then).
  const via = (i, more = {}) => ({ apiUrl: replicas[i].api, sandboxUrl: replicas[i].proxy, apiKey: testKey, ...more })
  const get = async (i, path) => {
    const r = await fetch(`${replicas[i].api}${path}`, { headers: hdr })
    assert.equal(r.status, 200, `GET ${path} through replica ${i + 1}: ${r.status}`)
    return r
  }
  const hosts = async (i) => (await (await get(i, '/hearth/v1/hosts')).json())
  const hostOf = async (i, id) => (await (await get(i, `/sandboxes/${id}`)).json()).clientID
  const timeoutCounts = async (i) => {
    const text = await (await get(i, '/metrics')).text()
    const n = (action) => Number(text.match(new RegExp(`^hearth_sandbox_timeouts_total\\{action="${action}"\\} (\\d+)$`, 'm'))?.[1])
    return { paused: n('paused'), killed: n('killed') }
  }
  const startReplica = (i) => {
    replicas[i].proc = track(new Proc(`cluster replica ${i + 1}`, replicas[i].args))
    return waitFor(`replica ${i + 1} answers`, async () => (await fetch(`${replicas[i].api}/health`)).ok, 60_000, 100)
  }
  const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`

  before(async () => {
    t0 = Date.now()
    networkUp()
    s3 = spawn(s3Bin, ['-host', `${net.s3}:9000`, '-backend', 'memory', '-initialbucket', 'hearth'], { stdio: 'ignore' })
    await waitFor('S3 server answers', async () => { try { await fetch(`http://${net.s3}:9000/`); return true } catch { return false } })
    const db = ownDatabase(pgURL, `hearth_cluster_${Date.now()}`)
    for (const [i, a] of net.replicas.entries()) {
      replicas.push({
        api: `http://${a}:3000`, proxy: `http://${a}:3002`,
        args: ['server', '--database-url', db, '--api-key', testKey, '--agent-token', token,
          '--listen', `${a}:3000`, '--proxy-listen', `${a}:3002`, '--host-dead-after', '10s'],
      })
      await startReplica(i)
    }
    const artifacts = `s3://hearth/cluster?endpoint=http://${net.s3}:9000&region=us-east-1`
    const controlPlanes = replicas.map((r) => r.api).join(',')
    for (const h of net.hosts) {
      const dir = dataDir(h.id)
      // Each agent is a host of its own: its own netns, so its own ports too.
      const args = ['agent', '--data-dir', dir, '--artifacts', artifacts,
        '--listen', `${h.addr}:5008`, '--proxy-listen', `${h.addr}:5007`, '--egress-inspect-port', '5009', '--host-id', h.id,
        '--slot-prefix', h.prefix, '--pool', h.pool, '--control-plane', controlPlanes, '--agent-token', token]
      const start = () => track(new Proc(`cluster agent ${h.id}`, args, { AWS_ACCESS_KEY_ID: 'e2e-key', AWS_SECRET_ACCESS_KEY: 'e2e-secret' },
        ['nsenter', `--net=/run/netns/${h.ns}`]))
      agents[h.id] = { proc: start(), dir, start, host: h }
    }
    await waitFor('three agents registered and heartbeating', async () => {
      const hs = await hosts(1)
      return hs.length === 3 && hs.every((h) => h.state === 'ready' && Date.now() - Date.parse(h.lastHeartbeat) < 6000)
    }, 180_000, 250)
    console.error(`cluster up: ${elapsed()}`)
  })

  after(async () => {
    console.error(`hearth process logs: ${procs.map((p) => p.logFile).join(' ')}`)
    const live = replicas.findIndex((r) => r.proc?.child.exitCode === null && r.proc?.child.signalCode === null)
    if (live >= 0) await pool([...created], 6, (id) => Sandbox.kill(id, via(live)).catch(() => {}))
    for (const p of procs) await p.stop()
    s3?.kill()
    networkDown()
    console.error(`cluster suite: ${elapsed()}`)
  })

  // Sandboxes by host, as replica i sees them.
  async function byHost(i, ids) {
    const m = {}
    for (const id of ids) (m[await hostOf(i, id)] ??= []).push(id)
    return m
  }

  let all = [] // the 30 sandbox IDs
  test(`a. ${SANDBOXES} sandboxes created through both replicas in turn spread over the three agents`, async () => {
    const t = Date.now()
    all = await pool(Array.from({ length: SANDBOXES }, (_, i) => i), 6, async (i) => {
      const sbx = await Sandbox.create('base', via(i % 2, { timeoutMs: 900_000 }))
      created.add(sbx.sandboxId)
      return sbx.sandboxId
    })
    console.error(`a: ${SANDBOXES} creates, 6 at a time: ${Date.now() - t} ms`)
    const spread = await byHost(0, all)
    const counts = Object.fromEntries(net.hosts.map((h) => [h.id, spread[h.id]?.length ?? 0]))
    console.error(`a: placement ${JSON.stringify(counts)}`)
    for (const h of net.hosts) assert.ok(counts[h.id] > 0, `no sandbox on ${h.id}: ${JSON.stringify(counts)}`)
    // Both replicas show the three hosts with their load, once the agents have reported it.
    for (const i of [0, 1]) {
      await waitFor(`replica ${i + 1} shows the load`, async () => {
        const hs = await hosts(i)
        return hs.length === 3 && hs.every((h) => h.state === 'ready' && !h.draining && h.sandboxesRunning === counts[h.id] &&
          h.memoryCommittedMiB > 0 && h.cpus > 0 && h.memoryTotalMiB > 0 && h.rpcAddr === `${agents[h.id].host.addr}:5008`)
      }, 20_000, 250).catch(async (e) => { console.error(JSON.stringify(await hosts(i))); throw e })
    }
  })

  test('b. with one replica killed (SIGKILL) every sandbox answers through the other, and the agents stay registered', async () => {
    assert.equal(all.length, SANDBOXES)
    replicas[0].proc.child.kill('SIGKILL')
    await replicas[0].proc.exited
    const killedAt = Date.now()
    const t = Date.now()
    await pool(all, 6, async (id) => {
      const sbx = await Sandbox.connect(id, via(1))
      const r = await sbx.commands.run('echo alive')
      assert.equal(r.stdout, 'alive\n', id)
    })
    console.error(`b: ${SANDBOXES} connect + commands.run through replica 2: ${Date.now() - t} ms`)
    // Heartbeats fail over to replica 2: every host reports in after the kill and stays ready.
    await waitFor('every agent heartbeats to replica 2', async () => (await hosts(1)).every((h) => h.state === 'ready' && Date.parse(h.lastHeartbeat) > killedAt + 500), 15_000, 250)
    await startReplica(0)
  })

  test(`c. ${PAUSED} sandboxes paused on an agent killed with SIGKILL resume on the others with their files and processes`, async () => {
    const spread = await byHost(1, all)
    const [victim, ids] = Object.entries(spread).sort((x, y) => y[1].length - x[1].length)[0]
    assert.ok(ids.length >= PAUSED, `the fullest agent has ${ids.length} sandboxes`)
    const chosen = ids.slice(0, PAUSED)
    const kept = await pool(chosen, 5, async (id, i) => {
      const sbx = await Sandbox.connect(id, via(i % 2))
      await sbx.files.write('/home/user/kept.txt', `kept by ${id}`)
      const sleeper = await sbx.commands.run('sleep 900', { background: true })
      assert.equal(await Sandbox.pause(id, via((i + 1) % 2)), true, `pause ${id}`)
      return { id, pid: sleeper.pid }
    })
    agents[victim].proc.child.kill('SIGKILL')
    await agents[victim].proc.exited
    await waitFor(`${victim} marked down`, async () => (await hosts(0)).find((h) => h.id === victim)?.state === 'down', 30_000, 250)
    const t = Date.now()
    const landed = await pool(kept, 3, async ({ id, pid }, i) => {
      const sbx = await Sandbox.connect(id, via(i % 2, { timeoutMs: 900_000 }))
      const to = await hostOf(i % 2, id)
      assert.notEqual(to, victim, `${id} resumed on the killed agent`)
      assert.equal(await sbx.files.read('/home/user/kept.txt'), `kept by ${id}`)
      assert.equal((await sbx.commands.run(`kill -0 ${pid} && echo alive`)).stdout, 'alive\n', `${id}: its sleep ${pid}`)
      return to
    })
    console.error(`c: ${PAUSED} moved off the killed ${victim} in ${Date.now() - t} ms, to ${JSON.stringify(landed)}`)
    // The killed agent comes back: it reclaims what its runtime left, and the reconcile has
    // it drop its stale copies of the sandboxes that moved away.
    agents[victim].proc = agents[victim].start()
    await waitFor(`${victim} ready again`, async () => (await hosts(1)).find((h) => h.id === victim)?.state === 'ready', 60_000, 250)
    await waitFor(`${victim} dropped the copies of the moved sandboxes`, async () =>
      kept.every(({ id }) => !existsSync(join(agents[victim].dir, 'sandboxes', id))), 60_000, 500)
  })

  test('d. a drained agent\'s running sandboxes pause and resume on the others', async () => {
    // The running sandboxes (those left on the agent killed in c were lost with it).
    const running = []
    for (const id of all) {
      const r = await fetch(`${replicas[0].api}/sandboxes/${id}`, { headers: hdr })
      const s = await r.json()
      if (r.status === 200 && s.state === 'running') running.push({ id, host: s.clientID })
    }
    const counts = {}
    for (const s of running) counts[s.host] = (counts[s.host] ?? 0) + 1
    const [drained] = Object.entries(counts).sort((x, y) => y[1] - x[1])[0]
    const on = running.filter((s) => s.host === drained).map((s) => s.id)
    const t = Date.now()
    const res = await fetch(`${replicas[1].api}/hearth/v1/hosts/${drained}/drain`, { method: 'POST', headers: hdr })
    const body = await res.json()
    assert.equal(res.status, 200, JSON.stringify(body))
    assert.deepEqual([...body.paused].sort(), [...on].sort(), `drain of ${drained}: ${JSON.stringify(body)}`)
    assert.deepEqual(body.failed, [])
    console.error(`d: drain of ${drained} paused ${on.length} in ${Date.now() - t} ms`)
    try {
      const t2 = Date.now()
      await pool(on, 3, async (id, i) => {
        const sbx = await Sandbox.connect(id, via(i % 2, { timeoutMs: 900_000 }))
        assert.notEqual(await hostOf(i % 2, id), drained, `${id} resumed on the drained agent`)
        assert.equal((await sbx.commands.run('echo moved')).stdout, 'moved\n')
      })
      console.error(`d: ${on.length} resumed elsewhere in ${Date.now() - t2} ms`)
    } finally {
      await fetch(`${replicas[1].api}/hearth/v1/hosts/${drained}/undrain`, { method: 'POST', headers: hdr })
    }
  })

  test(`e. ${TIMEOUTS} short timeouts with two replicas act exactly once`, async () => {
    await pool(all, 6, (id, i) => Sandbox.kill(id, via(i % 2)).catch(() => {}))
    const before = await Promise.all([0, 1].map(timeoutCounts))
    const ids = await pool(Array.from({ length: TIMEOUTS }, (_, i) => i), 5, async (i) => {
      const opts = via(i % 2, { timeoutMs: 6000, ...(i % 2 ? { lifecycle: { onTimeout: 'pause' } } : {}) })
      const sbx = await Sandbox.create('base', opts)
      created.add(sbx.sandboxId)
      return { id: sbx.sandboxId, pauses: i % 2 === 1 }
    })
    const state = async (id) => {
      const r = await fetch(`${replicas[0].api}/sandboxes/${id}`, { headers: hdr })
      return r.status === 404 ? 'gone' : (await r.json()).state
    }
    await waitFor('every timeout acted on', async () => {
      for (const s of ids) if ((await state(s.id)) !== (s.pauses ? 'paused' : 'gone')) return false
      return true
    }, 60_000, 500)
    // Both replicas ran their timers over the same sandboxes; each timeout counted once.
    await new Promise((r) => setTimeout(r, 3000)) // any second action would have happened by now
    const now = await Promise.all([0, 1].map(timeoutCounts))
    const delta = (k) => now[0][k] + now[1][k] - before[0][k] - before[1][k]
    console.error(`e: timeouts per replica: ${JSON.stringify(now.map((n, i) => ({ paused: n.paused - before[i].paused, killed: n.killed - before[i].killed })))}`)
    assert.equal(delta('paused'), TIMEOUTS / 2, 'pauses on timeout over both replicas')
    assert.equal(delta('killed'), TIMEOUTS / 2, 'kills on timeout over both replicas')
    for (const s of ids) assert.equal(await state(s.id), s.pauses ? 'paused' : 'gone', s.id)
  })
})
