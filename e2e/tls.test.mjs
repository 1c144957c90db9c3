// End-to-end tests of the proxy's edges with the published e2b SDK on `hearth dev`:
// HTTPS host routing (https://PORT-ID.<domain>, the SDK's getHost) with the certificate
// authority hearth dev generates, and signed file URLs on E2B_SANDBOX_URL that name no
// sandbox (the JS SDK's downloadUrl/uploadUrl).
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { statSync, readFileSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Sandbox } from 'e2b'
import { Proc, freePorts, dataDir, apiReady, testKey, hearthBin } from './harness.mjs'

if (!hearthBin) throw new Error('HEARTH_BIN must point at the hearth binary')
const here = dirname(fileURLToPath(import.meta.url))

describe('hearth dev: TLS and signed URLs at the proxy', () => {
  let dev, dir, api, proxy
  before(async () => {
    let arpc, aproxy
    ;[api, proxy, arpc, aproxy] = await freePorts(4)
    dir = dataDir('tls')
    // Defaults under test: --domain hearth.localhost, --tls with a generated CA.
    dev = new Proc('hearth dev tls', ['dev', '--data-dir', dir, '--api-key', testKey,
      '--listen', `127.0.0.1:${api}`, '--proxy-listen', `127.0.0.1:${proxy}`,
      '--agent-listen', `127.0.0.1:${arpc}`, '--agent-proxy-listen', `127.0.0.1:${aproxy}`,
      '--slot-prefix', 'he2et', '--pool', '10.248.0.0/16'])
    process.env.E2B_API_URL = `http://127.0.0.1:${api}`
    process.env.E2B_SANDBOX_URL = `http://127.0.0.1:${proxy}`
    process.env.E2B_API_KEY = testKey
    await apiReady(`http://127.0.0.1:${api}`, testKey).catch((e) => { console.error(dev.tail()); throw e })
  })
  after(async () => {
    console.error(`hearth process log: ${dev?.logFile}`)
    await dev?.stop()
  })

  test('the dev CA: made once in the data dir, key 0600, and the banner says how to trust it', () => {
    const caDir = join(dir, 'tls', 'hearth.localhost')
    assert.equal(statSync(join(caDir, 'ca-key.pem')).mode & 0o777, 0o600)
    assert.match(readFileSync(join(caDir, 'ca.pem'), 'utf8'), /^-----BEGIN CERTIFICATE-----/)
    assert.ok(dev.output.includes(`export NODE_EXTRA_CA_CERTS=${join(caDir, 'ca.pem')}`), dev.tail())
    assert.ok(dev.output.includes(`https://PORT-ID.hearth.localhost:${proxy}/`), dev.tail())
  })

  test('SDK over https://49983-ID.<domain> with E2B_SANDBOX_URL unset, and https://PORT-ID.<domain> from getHost', async () => {
    const env = { ...process.env, NODE_EXTRA_CA_CERTS: join(dir, 'tls', 'hearth.localhost', 'ca.pem'), E2B_DOMAIN: `hearth.localhost:${proxy}` }
    delete env.E2B_SANDBOX_URL
    const out = await new Promise((resolve) => {
      execFile(process.execPath, ['--import', './localhost-dns.mjs', './tls-client.mjs'], { cwd: here, env, timeout: 300_000 },
        (err, stdout, stderr) => resolve({ err, stdout, stderr }))
    })
    assert.equal(out.err, null, `tls-client failed:\n${out.stdout}\n${out.stderr}`)
    assert.match(out.stdout, /tls-client ok/)
  })

  test('signed file URLs on E2B_SANDBOX_URL, which names no sandbox, reach the sandbox that signed them', async () => {
    // Every Hearth sandbox is secure (has an envd access token), so the SDK signs its URLs.
    const sbx = await Sandbox.create('base', { timeoutMs: 120_000 })
    try {
      const base = `http://127.0.0.1:${proxy}/files?`
      await sbx.files.write('/home/user/signed.txt', 'signed download')
      const down = await sbx.downloadUrl('/home/user/signed.txt')
      assert.ok(down.startsWith(base) && down.includes('signature=v1_'), down)
      const res = await fetch(down)
      assert.equal(res.status, 200)
      assert.equal(await res.text(), 'signed download')

      const up = await sbx.uploadUrl('/home/user/uploaded.txt', { useSignatureExpiration: 60 })
      const form = new FormData()
      form.append('file', new Blob(['signed upload']), 'uploaded.txt')
      assert.equal((await fetch(up, { method: 'POST', body: form })).status, 200)
      assert.equal(await sbx.files.read('/home/user/uploaded.txt'), 'signed upload')

      // E2B envd's answers, exactly, and no sandbox ID in them.
      const expired = await fetch(await sbx.downloadUrl('/home/user/signed.txt', { useSignatureExpiration: -10 }))
      assert.equal(expired.status, 401)
      assert.deepEqual(await expired.json(), { code: 401, message: 'signature is already expired' })
      const tampered = await fetch(down.replace('signature=v1_', 'signature=v1_A'))
      assert.equal(tampered.status, 401)
      assert.deepEqual(await tampered.json(), { code: 401, message: 'invalid signature' })
      const otherPath = await fetch(down.replace('signed.txt', 'uploaded.txt'))
      assert.equal(otherPath.status, 401)

      // A URL without a signature (what E2B's SDKs build for a sandbox without a token) on a
      // host that names no sandbox: a 400 that says to name it in the host.
      const unrouted = await fetch(`${base}path=/etc/hostname`)
      assert.equal(unrouted.status, 400)
      assert.match((await unrouted.json()).message, /49983-ID\.<domain>/)
    } finally {
      await sbx.kill()
    }
  })
})
