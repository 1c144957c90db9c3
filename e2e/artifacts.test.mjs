// End-to-end: paused sandboxes move between hosts through a shared artifacts store. `hearth
// server` on PostgreSQL with two `hearth agent`s that share one `--artifacts` directory (as
// agents on one machine, or on NFS, do): a sandbox paused on one agent whose host is then
// drained, or stops answering, resumes on the other with the published e2b SDK's
// Sandbox.connect, its files and processes intact, and the old host drops its copy. The same
// suite runs over an S3-compatible server (s3://…, credentials from AWS_* variables) when
// HEARTH_E2E_GOFAKES3 names one.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, rmSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { Sandbox, Template } from 'e2b'
import { Proc, freePorts, dataDir, apiReady, testKey, waitFor, hearthBin, stateRoot, ownDatabase } from './harness.mjs'

if (!hearthBin) throw new Error('HEARTH_BIN must point at the hearth binary')

const pgURL = process.env.HEARTH_E2E_DATABASE_URL
// An S3-compatible server binary to run the suite over S3 too: scripts/e2e.sh builds
// e2e/s3server (gofakes3) and names it; without it only the directory runs.
const s3Bin = process.env.HEARTH_E2E_GOFAKES3

for (const kind of ['directory', 's3']) {
  const skip = !pgURL ? 'HEARTH_E2E_DATABASE_URL not set' : kind === 's3' && !s3Bin ? 'HEARTH_E2E_GOFAKES3 not set' : false
  describe(`paused sandboxes resume on another host (shared --artifacts, ${kind})`, { skip }, () => {
    const procs = []
    const track = (p) => { procs.push(p); return p }
    const token = 'e2e-artifacts-agent-token'
    const agents = {} // host ID -> { proc, dir }
    let api, s3
    const hdr = { 'X-API-Key': testKey }
    const info = async (id) => (await (await fetch(`${api}/sandboxes/${id}`, { headers: hdr })).json())
    const hosts = async () => (await (await fetch(`${api}/hearth/v1/hosts`, { headers: hdr })).json())

    before(async () => {
      const [apiPort, proxyPort, s3Port, ...agentPorts] = await freePorts(7)
      api = `http://127.0.0.1:${apiPort}`
      const db = ownDatabase(pgURL, `hearth_artifacts_${kind}_${Date.now()}`)
      let shared = join(stateRoot, 'artifacts-shared')
      const agentEnv = {}
      if (kind === 's3') {
        // The agents' credentials come from the standard AWS variables.
        s3 = spawn(s3Bin, ['-host', `127.0.0.1:${s3Port}`, '-backend', 'memory', '-initialbucket', 'hearth'], { stdio: 'ignore' })
        shared = `s3://hearth/e2e/paused?endpoint=http://127.0.0.1:${s3Port}&region=us-east-1`
        Object.assign(agentEnv, { AWS_ACCESS_KEY_ID: 'e2e-key', AWS_SECRET_ACCESS_KEY: 'e2e-secret' })
        await waitFor('S3 server answers', async () => { try { await fetch(`http://127.0.0.1:${s3Port}/`); return true } catch { return false } })
      } else {
        rmSync(shared, { recursive: true, force: true })
        mkdirSync(shared, { recursive: true })
      }
      track(new Proc(`artifacts ${kind} server`, ['server', '--database-url', db, '--api-key', testKey, '--agent-token', token,
        '--listen', `127.0.0.1:${apiPort}`, '--proxy-listen', `127.0.0.1:${proxyPort}`, '--host-dead-after', '15s']))
      process.env.E2B_API_URL = api
      process.env.E2B_SANDBOX_URL = `http://127.0.0.1:${proxyPort}`
      process.env.E2B_API_KEY = testKey
      await waitFor('server answers', async () => (await fetch(`${api}/health`)).ok)
      for (const [i, id, prefix, pool] of [[0, 'art-k', 'he2ek', '10.252.0.0/16'], [1, 'art-l', 'he2el', '10.253.0.0/16']]) {
        const [rpc, ap] = agentPorts.slice(2 * i, 2 * i + 2)
        const dir = dataDir(`artifacts-${id}`)
        const args = ['agent', '--data-dir', dir, '--artifacts', shared,
          '--listen', `127.0.0.1:${rpc}`, '--proxy-listen', `127.0.0.1:${ap}`, '--host-id', id,
          '--slot-prefix', prefix, '--pool', pool, '--control-plane', api, '--agent-token', token]
        const start = () => track(new Proc(`artifacts ${kind} agent ${id}`, args, agentEnv))
        rmSync(join(dir, 'template-artifacts'), { recursive: true, force: true })
        agents[id] = { proc: start(), dir, start }
      }
      await apiReady(api, testKey)
      await waitFor('both agents registered', async () => (await hosts()).filter((h) => h.state === 'ready').length === 2, 120_000, 250)
    })
    after(async () => {
      console.error(`hearth process logs: ${procs.map((p) => p.logFile).join(' ')}`)
      for (const a of Object.values(agents)) a.proc.child.kill('SIGCONT')
      for (const p of procs) await p.stop()
      s3?.kill()
    })

    // prepare creates a sandbox, leaves a file and a process in it and pauses it; it returns
    // the sandbox, the process's pid and the host it is paused on.
    async function prepare(content) {
      const sbx = await Sandbox.create('base', { timeoutMs: 300_000 })
      await sbx.files.write('/home/user/moved.txt', content)
      const sleeper = await sbx.commands.run('sleep 600', { background: true })
      const from = (await info(sbx.sandboxId)).clientID
      assert.ok(agents[from], `placed on ${from}`)
      assert.equal(await Sandbox.pause(sbx.sandboxId), true)
      return { sbx, pid: sleeper.pid, from, other: Object.keys(agents).find((h) => h !== from) }
    }

    async function expectMoved(id, pid, content, to) {
      const t0 = Date.now()
      const again = await Sandbox.connect(id, { timeoutMs: 300_000 })
      const took = Date.now() - t0
      assert.equal((await info(id)).clientID, to, 'resumed on the other host')
      assert.equal(await again.files.read('/home/user/moved.txt'), content)
      assert.equal((await again.commands.run(`kill -0 ${pid} && echo alive`)).stdout, 'alive\n')
      return took
    }

    test('a sandbox paused on a drained host resumes on the other one with its files and processes', async () => {
      const { sbx, pid, from, other } = await prepare('moved by a drain')
      try {
        execFileSync(hearthBin, ['host', 'drain', from], { env: process.env, stdio: ['ignore', 'pipe', 'inherit'] })
        const took = await expectMoved(sbx.sandboxId, pid, 'moved by a drain', other)
        console.error(`${kind}: connect (fetch + restore on ${other}): ${took} ms`)
        // The drained host is up: it is told at once to drop its stale copy.
        await waitFor('old host dropped its copy', async () => !existsSync(join(agents[from].dir, 'sandboxes', sbx.sandboxId)), 30_000, 250)
      } finally {
        execFileSync(hearthBin, ['host', 'undrain', from], { env: process.env, stdio: 'ignore' })
        await Sandbox.kill(sbx.sandboxId).catch(() => {})
      }
    })

    test('a sandbox paused on a host that stops answering resumes on the other one; the host drops its copy when back', async () => {
      await waitFor('both hosts ready and undrained', async () => (await hosts()).every((h) => h.state === 'ready' && !h.draining), 30_000, 250)
      const { sbx, pid, from, other } = await prepare('moved after a host loss')
      const stopped = agents[from].proc
      stopped.child.kill('SIGSTOP')
      try {
        await waitFor(`${from} marked down`, async () => (await hosts()).find((h) => h.id === from)?.state === 'down', 40_000, 500)
        assert.equal((await info(sbx.sandboxId)).state, 'paused')
        await expectMoved(sbx.sandboxId, pid, 'moved after a host loss', other)
      } finally {
        stopped.child.kill('SIGCONT')
      }
      try {
        // Back: reconcile finds the copy it holds is no longer its sandbox and destroys it;
        // the sandbox keeps running on the other host.
        await waitFor(`${from} ready again`, async () => (await hosts()).find((h) => h.id === from)?.state === 'ready', 30_000, 500)
        await waitFor('returning host dropped its copy', async () => !existsSync(join(agents[from].dir, 'sandboxes', sbx.sandboxId)), 30_000, 250)
        const s = await info(sbx.sandboxId)
        assert.equal(s.state, 'running')
        assert.equal(s.clientID, other)
        const again = await Sandbox.connect(sbx.sandboxId)
        assert.equal((await again.commands.run(`kill -0 ${pid} && echo still`)).stdout, 'still\n')
      } finally {
        await Sandbox.kill(sbx.sandboxId).catch(() => {})
      }
    })

    test('a template built through the API on one host is used on the other', { skip: kind !== 'directory' && 'the directory run covers it' }, async () => {
      const name = `e2e-moved-tpl-${Date.now().toString(36)}`
      const tpl = Template().fromTemplate('base').runCmd('echo built-elsewhere > /etc/moved-template', { user: 'root' })
      const built = await Template.build(tpl, name, { cpuCount: 1, memoryMB: 512 })
      const version = `${built.templateId}-${built.buildId}`
      const builder = Object.keys(agents).find((h) => existsSync(join(agents[h].dir, 'templates', version, 'meta.json')))
      assert.ok(builder, `version ${version} built on one of the agents`)
      const other = Object.keys(agents).find((h) => h !== builder)
      assert.ok(!existsSync(join(agents[other].dir, 'templates', version)), 'the other agent does not have it yet')
      await waitFor(`${builder} uploaded ${version}`, async () => existsSync(join(agents[builder].dir, 'template-artifacts', `${version}.json`)), 120_000, 250)
      await new Promise((r) => setTimeout(r, 6000)) // a heartbeat carries its manifest to the control plane
      execFileSync(hearthBin, ['host', 'drain', builder], { env: process.env, stdio: ['ignore', 'pipe', 'inherit'] })
      let sbx
      try {
        sbx = await Sandbox.create(name, { timeoutMs: 120_000, requestTimeoutMs: 300_000 })
        assert.equal((await info(sbx.sandboxId)).clientID, other, 'placed on the host that did not build it')
        assert.equal((await sbx.commands.run('cat /etc/moved-template')).stdout, 'built-elsewhere\n')
      } finally {
        execFileSync(hearthBin, ['host', 'undrain', builder], { env: process.env, stdio: 'ignore' })
        if (sbx) await Sandbox.kill(sbx.sandboxId).catch(() => {})
      }
    })

    test('an agent that starts without the template fetches it from the store', { skip: kind !== 'directory' && 'the directory run covers it' }, async () => {
      const [k, l] = ['art-k', 'art-l']
      // art-k uploads its base template at start (the tree is packed twice: hashed, then sent).
      await waitFor('art-k uploaded base', async () => existsSync(join(agents[k].dir, 'template-artifacts', 'base.json')), 240_000, 500)
      await new Promise((r) => setTimeout(r, 6000)) // a heartbeat carries it to the control plane
      // art-l restarts with no templates at all.
      await agents[l].proc.stop()
      rmSync(join(agents[l].dir, 'templates'), { recursive: true, force: true })
      rmSync(join(agents[l].dir, 'template-artifacts'), { recursive: true, force: true })
      const restarted = Date.now()
      agents[l].proc = agents[l].start()
      await waitFor('art-l back', async () => {
        const h = (await hosts()).find((x) => x.id === l)
        return h?.state === 'ready' && Date.parse(h.lastHeartbeat) > restarted
      }, 60_000, 250)
      execFileSync(hearthBin, ['host', 'drain', k], { env: process.env, stdio: ['ignore', 'pipe', 'inherit'] })
      let sbx
      try {
        const t0 = Date.now()
        sbx = await Sandbox.create('base', { timeoutMs: 300_000, requestTimeoutMs: 300_000 })
        console.error(`create on an agent without the template (fetch + unpack + boot): ${Date.now() - t0} ms`)
        assert.equal((await info(sbx.sandboxId)).clientID, l)
        assert.equal((await sbx.commands.run('cat /etc/os-release | head -1')).exitCode, 0)
        assert.ok(existsSync(join(agents[l].dir, 'templates', 'base', 'meta.json')), 'template installed on art-l')
      } finally {
        execFileSync(hearthBin, ['host', 'undrain', k], { env: process.env, stdio: 'ignore' })
        if (sbx) await Sandbox.kill(sbx.sandboxId).catch(() => {})
      }
    })
  })
}
