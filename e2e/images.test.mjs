// End-to-end tests of templates built from OCI images with the published e2b SDK, on
// `hearth dev` (gVisor): Template().fromImage(ref, credentials) and fromDockerfile pull from
// a registry the test serves on loopback (e2e/ociregistry, go-containerregistry's registry;
// public registries are out of reach here). Its image is the seed base template's root
// filesystem plus a layer with a whiteout and one with an opaque whiteout, and its config
// sets IMAGE_VAR.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, existsSync, createWriteStream } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Sandbox, Template } from 'e2b'
import { Proc, freePorts, dataDir, apiReady, testKey, hearthBin, logDir } from './harness.mjs'

if (!hearthBin) throw new Error('HEARTH_BIN must point at the hearth binary')

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..')
const goBin = process.env.GO || (existsSync('/usr/local/go/bin/go') ? '/usr/local/go/bin/go' : 'go')
const user = 'e2e'
const password = 'e2e-secret'

// startRegistry builds and starts e2e/ociregistry on the root filesystem at rootfs and
// returns its addresses ({open, auth, digest}) and the process.
async function startRegistry(binDir, rootfs) {
  const bin = join(binDir, 'ociregistry')
  execFileSync(goBin, ['build', '-o', bin, './e2e/ociregistry'], { cwd: repoRoot, stdio: 'inherit', timeout: 600_000 })
  const child = spawn(bin, ['-rootfs', rootfs, '-user', user, '-password', password], { stdio: ['ignore', 'pipe', 'pipe'] })
  const log = createWriteStream(join(logDir, 'ociregistry.log'), { flags: 'a' })
  child.stderr.on('data', (d) => log.write(d))
  let out = ''
  const addrs = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('the test registry did not start within 5 minutes')), 300_000)
    child.on('exit', (code) => reject(new Error(`the test registry exited (${code}): see ${join(logDir, 'ociregistry.log')}`)))
    child.stdout.on('data', (d) => {
      out += d
      const nl = out.indexOf('\n')
      if (nl >= 0) {
        clearTimeout(t)
        resolve(JSON.parse(out.slice(0, nl)))
      }
    })
  })
  return { ...addrs, child }
}

// One registry serves both suites; it is started by the first that needs it.
let registry, binDir
function sharedRegistry(rootfs) {
  if (!registry) {
    binDir = mkdtempSync(join(tmpdir(), 'hearth-e2e-images-'))
    registry = startRegistry(binDir, rootfs)
  }
  return registry
}
after(async () => {
  if (registry) (await registry.catch(() => null))?.child.kill('SIGTERM')
  if (binDir) rmSync(binDir, { recursive: true, force: true })
})

// startDev starts hearth dev on runtime with data dir name and points the SDK at it. Both
// suites use the slot prefix and pool of this file, one after the other.
async function startDev(name, runtime) {
  const [api, proxy, arpc, aproxy] = await freePorts(4)
  const dir = dataDir(name)
  rmSync(join(dir, 'oci-layers'), { recursive: true, force: true }) // the first pull pulls
  const reg = await sharedRegistry(join(dir, 'templates', 'base', 'rootfs'))
  const dev = new Proc(`hearth dev ${name}`, ['dev', '--runtime', runtime, '--data-dir', dir, '--api-key', testKey,
    '--listen', `127.0.0.1:${api}`, '--proxy-listen', `127.0.0.1:${proxy}`,
    '--agent-listen', `127.0.0.1:${arpc}`, '--agent-proxy-listen', `127.0.0.1:${aproxy}`,
    '--slot-prefix', 'he2ey', '--pool', '10.251.0.0/16'])
  process.env.E2B_API_URL = `http://127.0.0.1:${api}`
  process.env.E2B_SANDBOX_URL = `http://127.0.0.1:${proxy}`
  process.env.E2B_API_KEY = testKey
  await apiReady(`http://127.0.0.1:${api}`, testKey).catch((e) => { console.error(dev.tail()); throw e })
  return { dev, reg }
}

// imageChecks is what a sandbox of a template built from the test image must show.
const imageChecks = {
  cmd: [
    'cat /opt/layer/hello.txt',
    'test ! -e /etc/motd && echo motd-whited-out',
    'ls /opt/opq',
    'echo "IMAGE_VAR=$IMAGE_VAR"',
    'cat /home/user/step-marker',
    'echo "$(whoami) in $(pwd)"',
    'sudo whoami',
  ].join(' && '),
  want: [
    'hello from layer 2',
    'motd-whited-out',
    'upper.txt', // layer 3's opaque whiteout hid layer 2's lower.txt
    'IMAGE_VAR=from the image config',
    'step ran as user',
    'user in /home/user', // the image's User and WorkingDir are not used, as in E2B
    'root',
    '',
  ].join('\n'),
}

describe('templates from OCI images (hearth dev)', () => {
  let dev, reg
  const alias = `e2e-img-${Date.now().toString(36)}`
  before(async () => {
    ({ dev, reg } = await startDev('devimages', 'gvisor'))
  })
  after(async () => {
    console.error(`hearth process logs: ${dev?.logFile}`)
    await dev?.stop()
  })

  test('fromImage with registry credentials: layers, whiteouts and the image Env reach the sandbox', async () => {
    const logs = []
    const t = Template()
      .fromImage(`${reg.auth}/test/debian:12`, { username: user, password })
      .runCmd('echo "step ran as $(whoami)" > /home/user/step-marker')
    await Template.build(t, alias, { cpuCount: 1, memoryMB: 512, onBuildLogs: (l) => logs.push(l.toString()) })
    const all = logs.join('\n')
    assert.match(all, /FROM 127\.0\.0\.1:\d+\/test\/debian:12/)
    assert.match(all, /Layer 1\/3 [0-9a-f]{12}: pulled/)
    assert.ok(all.includes(reg.digest), `the logs name the digest pulled, ${reg.digest}`)

    const sbx = await Sandbox.create(alias)
    try {
      const r = await sbx.commands.run(imageChecks.cmd)
      assert.equal(r.stdout, imageChecks.want)
    } finally {
      await sbx.kill()
    }
  })

  test('fromDockerfile FROM a local image: RUN and ENV; the layers come from the cache', async () => {
    const logs = []
    const t = Template().fromDockerfile([
      `FROM ${reg.open}/test/debian:12`,
      'RUN echo "from the Dockerfile as $(whoami)" > /opt/dockerfile.txt',
      'ENV DF_VAR=dockerfile-env',
    ].join('\n'))
    await Template.build(t, `${alias}-df`, { cpuCount: 1, memoryMB: 512, onBuildLogs: (l) => logs.push(l.toString()) })
    const all = logs.join('\n')
    assert.match(all, /Layer 1\/3 [0-9a-f]{12}: cached/, 'a rebuild from the same image pulls no layer again')
    const sbx = await Sandbox.create(`${alias}-df`)
    try {
      const r = await sbx.commands.run('cat /opt/dockerfile.txt; echo "$DF_VAR $IMAGE_VAR"; cat /opt/layer/hello.txt')
      assert.equal(r.stdout, 'from the Dockerfile as root\ndockerfile-env from the image config\nhello from layer 2\n')
    } finally {
      await sbx.kill()
    }
  })

  test('pull failures are clear build errors', async () => {
    const build = (t, name) => Template.build(t, `${alias}-${name}`, { cpuCount: 1, memoryMB: 512 })
    await assert.rejects(build(Template().fromImage(`${reg.auth}/test/debian:12`, { username: user, password: 'wrong' }).runCmd('true'), 'badpw'),
      /authentication to registry 127\.0\.0\.1:\d+ as "e2e" failed/)
    await assert.rejects(build(Template().fromImage(`${reg.auth}/test/debian:12`).runCmd('true'), 'anon'),
      /refused an anonymous pull/)
    await assert.rejects(build(Template().fromImage(`${reg.open}/test/nothing:1`).runCmd('true'), 'unknown'),
      /test\/nothing:1 not found in registry/)
    await assert.rejects(build(Template().fromAWSRegistry('123.dkr.ecr.us-east-1.amazonaws.com/x:1',
      { accessKeyId: 'a', secretAccessKey: 'b', region: 'us-east-1' }).runCmd('true'), 'aws'),
    /fromImageRegistry type "aws" \(fromAWSRegistry\) is not supported: Hearth pulls with a username and password only/)
  })
})

// The VM runtime boots the same template: its ext4 image is made from the template's
// directory, and its guest init needs only /usr/bin/envd from it.
describe('templates from OCI images on QEMU (hearth dev --runtime qemu)', { skip: process.env.HEARTH_E2E_QEMU === '0' && 'HEARTH_E2E_QEMU=0' }, () => {
  let dev, reg
  before(async () => {
    ({ dev, reg } = await startDev('devimagesqemu', 'qemu'))
  })
  after(async () => {
    console.error(`hearth process logs: ${dev?.logFile}`)
    await dev?.stop()
  })

  test('fromImage: a microVM of the template shows the layers, whiteouts and image Env', async () => {
    const name = `e2e-img-qemu-${Date.now().toString(36)}`
    const t = Template()
      .fromImage(`${reg.auth}/test/debian:12`, { username: user, password })
      .runCmd('echo "step ran as $(whoami)" > /home/user/step-marker')
    await Template.build(t, name, { cpuCount: 1, memoryMB: 512 })
    const sbx = await Sandbox.create(name, { timeoutMs: 120_000 })
    try {
      const r = await sbx.commands.run(imageChecks.cmd)
      assert.equal(r.stdout, imageChecks.want)
    } finally {
      await sbx.kill()
    }
  })
})
