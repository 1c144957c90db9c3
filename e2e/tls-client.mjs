// Run by tls.test.mjs as a user would run their own program against `hearth dev`:
//   NODE_EXTRA_CA_CERTS=DATA/tls/hearth.localhost/ca.pem node --import ./localhost-dns.mjs tls-client.mjs
// with E2B_API_URL and E2B_API_KEY set, E2B_SANDBOX_URL unset and E2B_DOMAIN set. Every SDK
// call to a sandbox then goes to https://49983-ID.<domain>, and sbx.getHost(port) is
// https-reachable, both through the proxy's TLS with the dev CA. Exits non-zero on failure.
import assert from 'node:assert/strict'
import { Sandbox } from 'e2b'

assert.equal(process.env.E2B_SANDBOX_URL, undefined, 'E2B_SANDBOX_URL must be unset')
const domain = process.env.E2B_DOMAIN

async function waitFor(what, fn, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    try {
      const v = await fn()
      if (v) return v
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms: ${last?.cause?.message ?? last?.message ?? 'no result'}`)
    await new Promise((r) => setTimeout(r, 250))
  }
}

{
  const sbx = await Sandbox.create('base', { timeoutMs: 120_000 })
  try {
    // The domain comes back from create with the proxy's port in it.
    assert.equal(sbx.sandboxDomain, domain)
    const host = sbx.getHost(8000)
    assert.equal(host, `8000-${sbx.sandboxId}.${domain}`)
    // RPC and file transfer over https://49983-ID.<domain>.
    assert.equal((await sbx.commands.run('echo over-tls $(whoami)')).stdout, 'over-tls user\n')
    await sbx.files.write('/home/user/site/index.html', `page of ${sbx.sandboxId}\n`)
    assert.equal(await sbx.files.read('/home/user/site/index.html'), `page of ${sbx.sandboxId}\n`)

    await sbx.commands.run('cd /home/user/site && python3 -m http.server 8000', { background: true })
    const page = await waitFor('https://' + host, async () => {
      const r = await fetch(`https://${host}/`)
      return r.status === 200 && (await r.text())
    }, 20_000)
    assert.equal(page, `page of ${sbx.sandboxId}\n`)

    // A signed file URL names the sandbox in the host here.
    const url = await sbx.downloadUrl('/home/user/site/index.html')
    assert.ok(url.startsWith(`https://49983-${sbx.sandboxId}.${domain}/files?`), url)
    assert.ok(new URL(url).searchParams.has('signature'), url)
    const down = await fetch(url)
    assert.equal(down.status, 200)
    assert.equal(await down.text(), `page of ${sbx.sandboxId}\n`)
  } finally {
    await sbx.kill()
  }
}
console.log('tls-client ok')
