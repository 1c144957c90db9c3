// End-to-end test of the agent's warm pool (`hearth dev --warm-pool base=1`) with the E2B
// SDK: a sandbox claimed from the pool has what the create asked for (its ID and variables in
// its processes, metadata, egress policy, timeout, access token), and the pool refills.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox } from 'e2b'
import { Proc, freePorts, dataDir, apiReady, waitFor, testKey, hearthBin } from './harness.mjs'

if (!hearthBin) throw new Error('HEARTH_BIN must point at the hearth binary')

describe('warm pool (hearth dev --warm-pool base=1)', () => {
  let dev
  // What the agent logged, read from the process's output as it comes.
  const claims = () => [...dev.output.matchAll(/msg="warm pool: sandbox claimed" sandbox=(\S+)/g)].map((m) => m[1])
  const ready = () => (dev.output.match(/warm pool: sandbox ready/g) || []).length
  // The agent logs a claim before the create returns; its output may reach us after.
  const claimed = (id) => waitFor(`claim of ${id} logged`, () => claims().includes(id), 5_000)
  before(async () => {
    const [api, proxy, arpc, aproxy] = await freePorts(4)
    const dir = dataDir('devwarm')
    dev = new Proc('hearth dev warmpool', ['dev', '--data-dir', dir, '--api-key', testKey,
      '--listen', `127.0.0.1:${api}`, '--proxy-listen', `127.0.0.1:${proxy}`,
      '--agent-listen', `127.0.0.1:${arpc}`, '--agent-proxy-listen', `127.0.0.1:${aproxy}`,
      '--slot-prefix', 'hwp', '--pool', '10.211.128.0/17', '--warm-pool', 'base=1'])
    process.env.E2B_API_URL = `http://127.0.0.1:${api}`
    process.env.E2B_SANDBOX_URL = `http://127.0.0.1:${proxy}`
    process.env.E2B_API_KEY = testKey
    await apiReady(`http://127.0.0.1:${api}`, testKey).catch((e) => { console.error(dev.tail()); throw e })
    await waitFor('warm pool filled', () => ready() >= 1, 120_000)
  })
  after(async () => {
    await dev?.stop()
  })

  test('a claimed sandbox has its ID, variables, metadata, egress policy and token; the pool refills', async () => {
    const sbx = await Sandbox.create('base', {
      timeoutMs: 120_000, envs: { FOO: 'bar baz' }, metadata: { role: 'pooled' },
      network: { denyOut: ['0.0.0.0/0'] },
    })
    try {
      await claimed(sbx.sandboxId)
      assert.deepEqual(claims(), [sbx.sandboxId], 'only this create claimed')
      const r = await sbx.commands.run('echo "$E2B_SANDBOX_ID|$FOO|$E2B_SANDBOX"; whoami; pwd')
      assert.equal(r.stdout, `${sbx.sandboxId}|bar baz|true\nuser\n/home/user\n`)
      const dial = await sbx.commands.run('(exec 3<>/dev/tcp/192.0.2.1/80) 2>&1 | tail -n 1', { timeoutMs: 10_000 })
      assert.match(dial.stdout, /Connection refused/, 'denyOut is in force')
      const info = await Sandbox.getInfo(sbx.sandboxId)
      assert.deepEqual(info.metadata, { role: 'pooled' })
      // The token is the sandbox's own: envd refuses a request without it.
      const res = await fetch(`${process.env.E2B_SANDBOX_URL}/health`, { headers: { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49983' } })
      assert.equal(res.status, 204)
      const files = await fetch(`${process.env.E2B_SANDBOX_URL}/files?path=/etc/hostname`, { headers: { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49983' } })
      assert.equal(files.status, 401)
      await waitFor('pool refilled', () => ready() >= 2, 60_000)
    } finally {
      await sbx.kill().catch(() => {})
    }
  })

  test('a claimed sandbox ends at its timeout', async () => {
    await waitFor('pool ready', () => ready() >= claims().length + 1, 60_000)
    const sbx = await Sandbox.create('base', { timeoutMs: 3_000 })
    await claimed(sbx.sandboxId)
    assert.equal(await sbx.isRunning(), true)
    await waitFor('killed at its timeout', async () => !(await sbx.isRunning()), 30_000, 500)
  })
})
