// A headless Chromium driven over the DevTools protocol for the end-to-end tests. The
// protocol runs over a pipe (--remote-debugging-pipe: JSON messages ending in NUL on fds 3
// and 4), so the tests need no WebSocket client (Node 20 has none), no npm package and no
// debugging port another process could take or reach.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export async function launchChromium({ width = 1360, height = 1000 } = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'hearth-chromium-'))
  const child = spawn('chromium', ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
    '--no-first-run', '--no-default-browser-check', '--disable-extensions', '--remote-debugging-pipe',
    `--user-data-dir=${profile}`, `--window-size=${width},${height}`, 'about:blank'],
  { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-20_000) })
  const exited = new Promise((resolve) => child.on('exit', resolve))
  const toBrowser = child.stdio[3]
  const fromBrowser = child.stdio[4]
  let nextId = 0
  const pending = new Map()
  const listeners = new Set()
  let buf = Buffer.alloc(0)
  fromBrowser.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk])
    for (let i; (i = buf.indexOf(0)) >= 0;) {
      const msg = JSON.parse(buf.subarray(0, i).toString('utf8'))
      buf = buf.subarray(i + 1)
      if (msg.id !== undefined && pending.has(msg.id)) {
        const p = pending.get(msg.id)
        pending.delete(msg.id)
        if (msg.error) p.reject(new Error(`${p.method}: ${msg.error.message}`))
        else p.resolve(msg.result)
      } else {
        for (const l of listeners) l(msg)
      }
    }
  })
  exited.then(() => {
    for (const p of pending.values()) p.reject(new Error(`chromium exited: ${stderr.slice(-2000)}`))
    pending.clear()
  })
  const send = (method, params = {}, sessionId) => new Promise((resolve, reject) => {
    const id = ++nextId
    pending.set(id, { resolve, reject, method })
    toBrowser.write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + '\0')
  })

  const { targetId } = await send('Target.createTarget', { url: 'about:blank' })
  const { sessionId } = await send('Target.attachToTarget', { targetId, flatten: true })
  const page = new Page((m, p) => send(m, p, sessionId))
  listeners.add((msg) => { if (msg.sessionId === sessionId) page.event(msg) })
  await page.send('Page.enable')
  await page.send('Runtime.enable')
  await page.send('Network.enable')
  await page.send('Emulation.setDeviceMetricsOverride', { width, height, deviceScaleFactor: 1, mobile: false })
  return {
    page,
    stderr: () => stderr,
    async close() {
      send('Browser.close').catch(() => {})
      const t = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(t)
      rmSync(profile, { recursive: true, force: true })
    },
  }
}

// Page is one tab. It records what a test asserts on besides the page itself: console
// messages, uncaught exceptions, every HTTP response's status and every WebSocket handshake.
class Page {
  constructor(send) {
    this.send = send
    this.console = []
    this.errors = []
    this.responses = [] // { url, status }
    this.webSockets = new Map() // requestId → { url, status }
  }

  event({ method, params }) {
    switch (method) {
      case 'Runtime.consoleAPICalled':
        this.console.push(params.args.map((a) => a.value ?? a.description ?? '').join(' '))
        break
      case 'Runtime.exceptionThrown':
        this.errors.push(params.exceptionDetails.exception?.description ?? params.exceptionDetails.text)
        break
      case 'Network.responseReceived':
        this.responses.push({ url: params.response.url, status: params.response.status })
        break
      case 'Network.webSocketCreated':
        this.webSockets.set(params.requestId, { url: params.url, status: 0 })
        break
      case 'Network.webSocketHandshakeResponseReceived': {
        const ws = this.webSockets.get(params.requestId)
        if (ws) ws.status = params.response.status
        break
      }
    }
  }

  async navigate(url) {
    const r = await this.send('Page.navigate', { url })
    if (r.errorText) throw new Error(`navigate to ${url}: ${r.errorText}`)
  }

  // evaluate runs an expression in the page and returns its value (awaiting a promise).
  async evaluate(expression) {
    const r = await this.send('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true })
    if (r.exceptionDetails) throw new Error(`${expression}: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`)
    return r.result.value
  }

  // waitFor polls a condition in the page; on timeout the error carries the page's text.
  async waitFor(what, cond, timeoutMs = 60_000) {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      try {
        if (await this.evaluate(`(() => { try { return !!(${cond}) } catch { return false } })()`)) return
      } catch {}
      if (Date.now() > deadline) {
        const text = await this.evaluate('document.body ? document.body.innerText.slice(0, 1500) : ""').catch(() => '')
        throw new Error(`waiting for ${what}: not within ${timeoutMs} ms. Page text: ${text}\nconsole: ${this.console.slice(-20).join('\n')}`)
      }
      await new Promise((r) => setTimeout(r, 200))
    }
  }

  async screenshot(file) {
    await new Promise((r) => setTimeout(r, 300)) // let the last paint land
    const { data } = await this.send('Page.captureScreenshot', { format: 'png' })
    writeFileSync(file, Buffer.from(data, 'base64'))
  }
}
