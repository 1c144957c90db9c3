// End-to-end tests of E2B's snapshots and filesystem-only pauses with the published e2b SDK,
// on `hearth dev` with the default runtime (gVisor).
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { Sandbox, SandboxNotFoundError } from 'e2b'
import { Proc, freePorts, dataDir, apiReady, testKey, waitFor, hearthBin } from './harness.mjs'

if (!hearthBin) throw new Error('HEARTH_BIN must point at the hearth binary')

// duBytes is what path takes on disk, in bytes (du's apparent size), or -1 when absent.
function duBytes(path) {
  try {
    return Number(execFileSync('du', ['-sb', path]).toString().split('\t')[0])
  } catch {
    return -1
  }
}

// counter starts a loop that writes an increasing number to path every 100 ms: a running
// process whose state lives in memory (the shell's variable).
async function startCounter(sbx, path) {
  await sbx.commands.run(`(i=0; while :; do i=$((i+1)); echo $i > ${path}.new; mv ${path}.new ${path}; sleep 0.1; done) >/dev/null 2>&1 &`, { background: true })
  await waitFor('counter written', async () => (await sbx.commands.run(`cat ${path} 2>/dev/null || true`)).stdout.trim() !== '', 10_000, 200)
}

async function readCounter(sbx, path) {
  return Number((await sbx.commands.run(`cat ${path}`)).stdout.trim())
}

// counterRuns says whether the counter at path still advances.
async function counterRuns(sbx, path) {
  const before = await readCounter(sbx, path)
  try {
    await waitFor('counter advances', async () => (await readCounter(sbx, path)) > before, 10_000, 200)
    return true
  } catch {
    return false
  }
}

describe('snapshots and filesystem-only pause (hearth dev, gVisor)', () => {
  let dev, dir, api
  before(async () => {
    const [apiPort, proxy, arpc, aproxy] = await freePorts(4)
    api = `http://127.0.0.1:${apiPort}`
    dir = dataDir('snapshots')
    dev = new Proc('hearth dev snapshots', ['dev', '--data-dir', dir, '--api-key', testKey,
      '--listen', `127.0.0.1:${apiPort}`, '--proxy-listen', `127.0.0.1:${proxy}`,
      '--agent-listen', `127.0.0.1:${arpc}`, '--agent-proxy-listen', `127.0.0.1:${aproxy}`,
      '--slot-prefix', 'he2es', '--pool', '10.227.0.0/16'])
    process.env.E2B_API_URL = api
    process.env.E2B_SANDBOX_URL = `http://127.0.0.1:${proxy}`
    process.env.E2B_API_KEY = testKey
    await apiReady(api, testKey).catch((e) => { console.error(dev.tail()); throw e })
  })
  after(async () => {
    console.error(`hearth process log: ${dev?.logFile}`)
    await dev?.stop()
  })

  test('a snapshot of a running sandbox outlives it and starts several sandboxes with its files and processes', async () => {
    const src = await Sandbox.create('base', { timeoutMs: 120_000 })
    const made = []
    try {
      await src.files.write('/home/user/state.txt', 'before the snapshot')
      await startCounter(src, '/home/user/counter')
      const snap = await src.createSnapshot({ name: 'e2e-golden' })
      assert.equal(snap.snapshotId, 'e2e-golden:default')
      assert.deepEqual(snap.names, ['e2e-golden:default'])
      // The source keeps running, files and processes as they were.
      assert.equal(await src.isRunning(), true)
      assert.equal(await counterRuns(src, '/home/user/counter'), true, 'the source counter stopped')
      await src.files.write('/home/user/state.txt', 'after the snapshot')

      const unnamed = await src.createSnapshot()
      assert.match(unnamed.snapshotId, /^[a-z0-9]{20}:default$/)
      assert.deepEqual(unnamed.names, [])

      // Listed, newest first, paginated as the SDK pages (X-Next-Token), and filtered.
      const paginator = Sandbox.listSnapshots({ sandboxId: src.sandboxId, limit: 1 })
      const listed = []
      while (paginator.hasNext) listed.push(...await paginator.nextItems())
      assert.deepEqual(listed.map((s) => s.snapshotId), [unnamed.snapshotId, snap.snapshotId])
      assert.deepEqual((await src.listSnapshots().nextItems()).map((s) => s.snapshotId), [unnamed.snapshotId, snap.snapshotId])
      assert.deepEqual((await Sandbox.listSnapshots({ name: 'e2e-golden' }).nextItems()).map((s) => s.snapshotId), [snap.snapshotId])

      // Durable under the agent's data dir.
      const stored = execFileSync('ls', [join(dir, 'sandboxes', '.snapshots')]).toString().trim().split('\n')
      assert.equal(stored.length, 2, `snapshot dirs: ${stored}`)
      console.log(`memory snapshot size (du -sb ${join(dir, 'sandboxes', '.snapshots', '<id>')}): ${duBytes(join(dir, 'sandboxes', '.snapshots', stored[0]))} bytes`)

      // The source goes; the snapshot stays and starts two sandboxes.
      await src.kill()
      for (let i = 0; i < 2; i++) made.push(await Sandbox.create(snap.snapshotId, { timeoutMs: 120_000 }))
      assert.notEqual(made[0].sandboxId, made[1].sandboxId)
      for (const c of made) {
        assert.equal(await c.files.read('/home/user/state.txt'), 'before the snapshot')
        assert.equal(await counterRuns(c, '/home/user/counter'), true, `${c.sandboxId}: the copied counter is not running`)
        assert.equal((await c.commands.run('whoami')).stdout, 'user\n')
      }
      await made[0].files.write('/home/user/state.txt', 'only in the first copy')
      assert.equal(await made[1].files.read('/home/user/state.txt'), 'before the snapshot')

      // Deleting the snapshot leaves the sandboxes started from it whole, pause and resume included.
      assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), true)
      assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), false, 'a deleted snapshot is not found')
      assert.equal(await Sandbox.deleteSnapshot(unnamed.snapshotId), true)
      assert.equal(execFileSync('ls', [join(dir, 'sandboxes', '.snapshots')]).toString().trim(), '')
      await assert.rejects(Sandbox.create(snap.snapshotId), (e) => /snapshot e2e-golden:default not found/.test(e.message))
      assert.equal(await made[1].pause(), true)
      const back = await Sandbox.connect(made[1].sandboxId)
      assert.equal(await back.files.read('/home/user/state.txt'), 'before the snapshot')
      assert.equal(await counterRuns(back, '/home/user/counter'), true)
      assert.equal(await made[0].files.read('/home/user/state.txt'), 'only in the first copy')
    } finally {
      await src.kill().catch(() => {})
      for (const c of made) await c.kill().catch(() => {})
    }
  })

  test('snapshot errors: unknown sandbox, unknown snapshot (E2B 404 body)', async () => {
    await assert.rejects(Sandbox.createSnapshot('nosuchsandbox'), SandboxNotFoundError)
    assert.equal(await Sandbox.deleteSnapshot('nosuch:default'), false)
    const res = await fetch(`${api}/templates/nosuch:default`, { method: 'DELETE', headers: { 'X-API-Key': testKey } })
    assert.equal(res.status, 404)
    assert.deepEqual(await res.json(), { code: 404, message: 'snapshot nosuch:default not found' })
  })

  test('pause({keepMemory: false}) keeps only the disk: traffic does not resume it, connect cold-boots it with its files', async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 120_000, lifecycle: { onTimeout: 'pause', autoResume: true } })
    try {
      await sbx.files.write('/home/user/kept.txt', 'kept on disk')
      await sbx.commands.run('mkdir -p /opt/extra && echo root-file > /opt/extra/f && rm /home/user/.bashrc', { user: 'root' })
      const bootBefore = (await sbx.files.read('/proc/sys/kernel/random/boot_id')).trim()
      await startCounter(sbx, '/home/user/counter')

      assert.equal(await sbx.pause({ keepMemory: false }), true)
      assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused')
      const fsSnap = join(dir, 'sandboxes', sbx.sandboxId, 'runtime', 'fs-snapshot')
      console.log(`filesystem-only pause size (du -sb ${fsSnap}): ${duBytes(fsSnap)} bytes`)
      assert.ok(duBytes(fsSnap) > 0, 'no filesystem snapshot on disk')
      // Even with autoResume on, traffic gets E2B's "not found" for a paused sandbox.
      assert.equal(await sbx.isRunning(), false)
      assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused')

      const back = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 60_000 })
      assert.equal(await back.files.read('/home/user/kept.txt'), 'kept on disk')
      assert.equal((await back.commands.run('cat /opt/extra/f; test -e /home/user/.bashrc && echo bashrc-back || echo bashrc-gone')).stdout, 'root-file\nbashrc-gone\n')
      const bootAfter = (await back.files.read('/proc/sys/kernel/random/boot_id')).trim()
      assert.notEqual(bootAfter, bootBefore, 'resume did not boot the sandbox afresh')
      const ps = (await back.commands.run('ps -eo args')).stdout
      assert.ok(!ps.includes('sleep 0.1'), `the counter survived a filesystem-only pause: ${ps}`)
      // A memory pause after it works as before.
      assert.equal(await back.pause(), true)
      const memSnap = join(dir, 'sandboxes', sbx.sandboxId, 'runtime', 'snapshot')
      console.log(`memory pause size of the same sandbox (du -sb ${memSnap}): ${duBytes(memSnap)} bytes`)
      const again = await Sandbox.connect(sbx.sandboxId)
      assert.equal(await again.files.read('/home/user/kept.txt'), 'kept on disk')
      assert.equal((await again.files.read('/proc/sys/kernel/random/boot_id')).trim(), bootAfter)
    } finally {
      await Sandbox.kill(sbx.sandboxId).catch(() => {})
    }
  })

  test('lifecycle onTimeout {action: pause, keepMemory: false} pauses keeping only the disk', async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 3_000, lifecycle: { onTimeout: { action: 'pause', keepMemory: false } } })
    try {
      await sbx.files.write('/home/user/kept.txt', 'through the timeout')
      const bootBefore = (await sbx.files.read('/proc/sys/kernel/random/boot_id')).trim()
      await waitFor('paused on timeout', async () => (await Sandbox.getInfo(sbx.sandboxId)).state === 'paused', 60_000, 500)
      assert.equal(await sbx.isRunning(), false)
      const back = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 60_000 })
      assert.equal(await back.files.read('/home/user/kept.txt'), 'through the timeout')
      assert.notEqual((await back.files.read('/proc/sys/kernel/random/boot_id')).trim(), bootBefore)
    } finally {
      await Sandbox.kill(sbx.sandboxId).catch(() => {})
    }
    // The API refuses what the SDK refuses before sending: a filesystem-only pause cannot auto-resume.
    const res = await fetch(`${api}/v2/sandboxes`, {
      method: 'POST', headers: { 'X-API-Key': testKey, 'Content-Type': 'application/json' },
      body: JSON.stringify({ templateID: 'base', autoPause: true, autoPauseMemory: false, autoResume: { enabled: true } }),
    })
    assert.equal(res.status, 400)
    assert.match((await res.json()).message, /autoResume cannot be enabled with autoPauseMemory false/)
  })
})

// QEMU microVMs (software emulation here): filesystem-only pauses work; snapshots need a fork
// of a running VM, which this runtime does not have, so they are refused with 501.
describe('filesystem-only pause on QEMU (hearth dev --runtime qemu)', { skip: process.env.HEARTH_E2E_QEMU === '0' && 'HEARTH_E2E_QEMU=0' }, () => {
  let dev, dir
  before(async () => {
    const [apiPort, proxy, arpc, aproxy] = await freePorts(4)
    const api = `http://127.0.0.1:${apiPort}`
    dir = dataDir('snapshotsqemu')
    dev = new Proc('hearth dev snapshots qemu', ['dev', '--runtime', 'qemu', '--data-dir', dir, '--api-key', testKey,
      '--listen', `127.0.0.1:${apiPort}`, '--proxy-listen', `127.0.0.1:${proxy}`,
      '--agent-listen', `127.0.0.1:${arpc}`, '--agent-proxy-listen', `127.0.0.1:${aproxy}`,
      '--slot-prefix', 'he2er', '--pool', '10.228.0.0/16'])
    process.env.E2B_API_URL = api
    process.env.E2B_SANDBOX_URL = `http://127.0.0.1:${proxy}`
    process.env.E2B_API_KEY = testKey
    await apiReady(api, testKey).catch((e) => { console.error(dev.tail()); throw e })
  })
  after(async () => {
    console.error(`hearth process log: ${dev?.logFile}`)
    await dev?.stop()
  })

  test('pause({keepMemory: false}) and connect cold-boot the VM with its files; snapshots are refused', async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 300_000 })
    try {
      await sbx.files.write('/home/user/kept.txt', 'kept on the VM disk')
      const bootBefore = (await sbx.files.read('/proc/sys/kernel/random/boot_id')).trim()
      await assert.rejects(sbx.createSnapshot(), /cannot snapshot/)
      assert.equal(await sbx.pause({ keepMemory: false }), true)
      const fsSnap = join(dir, 'sandboxes', sbx.sandboxId, 'runtime', 'fs-snapshot')
      console.log(`qemu filesystem-only pause size (du -sb ${fsSnap}): ${duBytes(fsSnap)} bytes`)
      assert.equal(await sbx.isRunning(), false)
      const back = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 300_000 })
      assert.equal(await back.files.read('/home/user/kept.txt'), 'kept on the VM disk')
      assert.notEqual((await back.files.read('/proc/sys/kernel/random/boot_id')).trim(), bootBefore)
    } finally {
      await Sandbox.kill(sbx.sandboxId).catch(() => {})
    }
  })
})
