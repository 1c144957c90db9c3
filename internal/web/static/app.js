// Hearth dashboard. Plain DOM, no framework: every page reads the REST API through
// /dashboard/api/ (the server adds the session's API key) and redraws on a timer. Text from
// the API and from sandboxes is only ever set as textContent, never parsed as HTML.
'use strict'

const csrf = document.querySelector('meta[name="csrf-token"]')?.content || ''
const page = document.body.dataset.page
const sandboxID = document.body.dataset.id

// el builds an element; string children become text nodes.
function el (tag, attrs, ...children) {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v)
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v)
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c))
  return e
}

function flash (msg, ok) {
  const f = document.getElementById('flash')
  f.textContent = msg
  f.className = ok ? 'ok' : ''
  f.hidden = false
  clearTimeout(flash.t)
  flash.t = setTimeout(() => { f.hidden = true }, ok ? 3000 : 8000)
}

// request calls the dashboard's server; a lost session goes back to the sign-in page.
async function request (method, url, body, headers) {
  return (await exchange(method, url, body, headers)).data
}

// exchange is request that also hands back the response's headers (list pages carry the
// next page's token in one).
async function exchange (method, url, body, headers) {
  const opts = { method, headers: { 'X-CSRF-Token': csrf, ...(headers || {}) }, credentials: 'same-origin' }
  if (body !== undefined) {
    if (body instanceof Blob || typeof body === 'string') opts.body = body
    else { opts.body = JSON.stringify(body); opts.headers['Content-Type'] = 'application/json' }
  }
  const res = await fetch(url, opts)
  if (res.status === 401) { location.href = '/dashboard/signin'; throw new Error('signed out') }
  const text = await res.text()
  let data = null
  try { data = text ? JSON.parse(text) : null } catch { data = text }
  if (!res.ok) throw new Error((data && data.message) || `${method} ${url}: ${res.status}`)
  return { data, headers: res.headers }
}
const api = (method, path, body) => request(method, '/dashboard/api' + path, body)

// act runs a user's action and reports how it went: fn's message (a string it returns), or
// "done", or its failure.
async function act (what, fn) {
  try {
    const msg = await fn()
    flash(what + ': ' + (typeof msg === 'string' ? msg : 'done'), true)
  } catch (e) { flash(what + ': ' + e.message) }
}

function age (from) {
  const s = Math.max(0, Math.round((Date.now() - new Date(from)) / 1000))
  if (s < 60) return s + 's'
  if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's'
  return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm'
}
function until (to) {
  const s = Math.round((new Date(to) - Date.now()) / 1000)
  return s <= 0 ? 'now' : 'in ' + age(Date.now() - s * 1000)
}
function bytes (n) {
  if (n < 1024) return n + ' B'
  const u = ['KiB', 'MiB', 'GiB', 'TiB']; let i = -1
  do { n /= 1024; i++ } while (n >= 1024 && i < u.length - 1)
  return n.toFixed(1) + ' ' + u[i]
}
function metadataText (md) {
  return Object.entries(md || {}).map(([k, v]) => k + '=' + v).join(', ')
}
function stateBadge (s) { return el('span', { class: 'state ' + s }, s) }

// every runs fn now and then every ms, skipping a tick while the previous one is running
// or the tab is hidden.
function every (ms, fn) {
  let busy = false
  const tick = async () => {
    if (busy || document.hidden) return
    busy = true
    try { await fn() } catch (e) { if (e.message !== 'signed out') flash(e.message) } finally { busy = false }
  }
  tick()
  return setInterval(tick, ms)
}

// Sandbox actions shared by the list and the detail page.
const actions = {
  pause: id => api('POST', `/sandboxes/${id}/pause`),
  resume: (id, timeout) => api('POST', `/sandboxes/${id}/resume`, timeout ? { timeout } : {}),
  kill: id => api('DELETE', `/sandboxes/${id}`),
  setTimeout: (id, timeout) => api('POST', `/sandboxes/${id}/timeout`, { timeout })
}

// ---- sandboxes list ----

// parsePairs reads "key=value, key2=value2" (the create form's metadata and the metadata
// filter); an entry without "=" is an error naming it.
function parsePairs (text) {
  const out = {}
  for (const pair of text.split(',')) {
    if (!pair.trim()) continue
    const i = pair.indexOf('=')
    if (i < 1 || !pair.slice(0, i).trim()) throw new Error(`"${pair.trim()}" is not key=value`)
    out[pair.slice(0, i).trim()] = pair.slice(i + 1).trim()
  }
  return out
}

// The list's filters live in the page's URL query (state, template, metadata, id), so a link
// reproduces the view. State, template and metadata are the API's own list filters; the API
// has no filter by ID, so id (part of an ID, any case) is matched here.
const listFilters = ['state', 'template', 'metadata', 'id']

function listQuery (f) {
  const q = new URLSearchParams({ state: f.state || 'running,paused', limit: '100' })
  if (f.template) q.set('template', f.template)
  const md = Object.entries(parsePairs(f.metadata))
  // The API's metadata filter is key=value pairs joined by &, each key and value
  // percent-encoded (as the SDKs send it).
  if (md.length) q.set('metadata', new URLSearchParams(md.map(([k, v]) => [encodeURIComponent(k), encodeURIComponent(v)])).toString())
  return q
}

// listAll reads every page of the list (up to maxPages of 100).
async function listAll (q, maxPages) {
  const out = []
  for (let i = 0; i < maxPages; i++) {
    const { data, headers } = await exchange('GET', '/dashboard/api/v2/sandboxes?' + q)
    out.push(...data)
    const next = headers.get('X-Next-Token')
    if (!next) return { list: out, more: false }
    q.set('nextToken', next)
  }
  return { list: out, more: true }
}

// runLimited runs fn over items, at most n at a time.
async function runLimited (items, n, fn) {
  const queue = [...items]
  await Promise.all(Array.from({ length: Math.min(n, queue.length) }, async () => {
    while (queue.length) await fn(queue.shift())
  }))
}

async function sandboxesPage () {
  const tbody = document.querySelector('#sandboxes tbody')
  const input = name => document.getElementById('filter-' + name)
  const filterError = document.getElementById('filter-error')
  const now = new Map() // sandbox ID -> its latest metrics sample
  const fromURL = () => {
    const q = new URLSearchParams(location.search)
    for (const f of listFilters) {
      const v = q.get(f) || ''
      const box = input(f)
      // A value the select does not offer (a link from elsewhere) still filters, and the
      // API says what is wrong with it.
      if (box.tagName === 'SELECT' && ![...box.options].some(o => o.value === v)) box.append(el('option', { value: v }, v))
      box.value = v
    }
  }
  const current = () => Object.fromEntries(listFilters.map(f => [f, input(f).value.trim()]))
  const showNow = (tr, sb) => {
    const s = now.get(sb.sandboxID)
    tr.querySelector('.cpu-now').textContent = s ? `now ${s.cpuUsedPct.toFixed(1)}%` : ''
    tr.querySelector('.mem-now').textContent = s ? `now ${bytes(s.memUsed)}` : ''
  }
  let generation = 0
  const refresh = async () => {
    const gen = ++generation
    const f = current()
    let q
    try { q = listQuery(f) } catch (e) {
      filterError.textContent = 'metadata filter: ' + e.message + ' (write key=value, key2=value2)'
      filterError.hidden = false
      tbody.replaceChildren() // not the rows of the filter before
      document.getElementById('empty').hidden = true
      document.getElementById('count').textContent = ''
      return
    }
    filterError.hidden = true
    const { list: all, more } = await listAll(q, 10)
    if (gen !== generation) return // a newer filter's answer is on its way
    const needle = f.id.toLowerCase()
    const list = all.filter(sb => sb.sandboxID.toLowerCase().includes(needle))
    list.sort((a, b) => new Date(b.startedAt) - new Date(a.startedAt))
    const rows = list.map(sb => {
      const tr = el('tr', { 'data-id': sb.sandboxID, 'data-state': sb.state },
        el('td', {}, el('a', { href: '/dashboard/sandboxes/' + encodeURIComponent(sb.sandboxID) }, el('code', {}, sb.sandboxID))),
        el('td', {}, stateBadge(sb.state)),
        el('td', {}, sb.alias || sb.templateID),
        el('td', {}, sb.clientID),
        el('td', {}, sb.cpuCount + ' vCPU ', el('small', { class: 'cpu-now' })),
        el('td', {}, sb.memoryMB + ' MiB ', el('small', { class: 'mem-now' })),
        el('td', {}, age(sb.startedAt)),
        el('td', {}, until(sb.endAt)),
        el('td', {}, metadataText(sb.metadata)),
        el('td', { class: 'actions' },
          sb.state === 'running'
            ? el('button', { class: 'pause', onclick: () => act('pause ' + sb.sandboxID, async () => { await actions.pause(sb.sandboxID); await refresh() }) }, 'Pause')
            : el('button', { class: 'resume', onclick: () => act('resume ' + sb.sandboxID, async () => { await actions.resume(sb.sandboxID); await refresh() }) }, 'Resume'),
          ' ',
          el('button', { class: 'kill danger', onclick: () => act('kill ' + sb.sandboxID, async () => { await actions.kill(sb.sandboxID); await refresh() }) }, 'Kill')))
      showNow(tr, sb)
      return tr
    })
    tbody.replaceChildren(...rows)
    const filtered = listFilters.some(k => f[k])
    const empty = document.getElementById('empty')
    empty.hidden = list.length > 0
    empty.textContent = filtered ? 'No sandboxes match these filters.' : 'No running or paused sandboxes.'
    document.getElementById('count').textContent = (more ? 'the newest ' : '') + list.length +
      (list.length === 1 ? ' sandbox' : ' sandboxes') + (needle ? ` (${all.length} before the ID filter)` : '')
    document.getElementById('refreshed').textContent = 'updated ' + new Date().toLocaleTimeString()
    // CPU and memory in use now, for the running sandboxes shown (the first 50).
    const running = list.filter(sb => sb.state === 'running').slice(0, 50)
    for (const id of now.keys()) if (!running.some(sb => sb.sandboxID === id)) now.delete(id)
    await runLimited(running, 4, async sb => {
      try {
        // The last few samples, not the sandbox's whole history: the newest is "now".
        const since = Math.floor(Date.now() / 1000) - 120 // room for a browser clock off by 2 min
        const m = await api('GET', `/sandboxes/${encodeURIComponent(sb.sandboxID)}/metrics?start=${since}`)
        if (m.length) now.set(sb.sandboxID, m[m.length - 1])
      } catch { now.delete(sb.sandboxID) } // a sandbox pausing or on a host that is down
      const tr = [...tbody.rows].find(r => r.dataset.id === sb.sandboxID)
      if (tr && gen === generation) showNow(tr, sb)
    })
  }

  // A change of a filter rewrites the URL (replaceState: typing is not history) and the list.
  let typing
  const apply = () => {
    const q = new URLSearchParams()
    for (const [k, v] of Object.entries(current())) if (v) q.set(k, v)
    const qs = q.toString()
    history.replaceState(null, '', location.pathname + (qs ? '?' + qs : ''))
    refresh().catch(e => flash(e.message))
  }
  for (const f of listFilters) {
    input(f).addEventListener(input(f).tagName === 'SELECT' ? 'change' : 'input', () => { clearTimeout(typing); typing = setTimeout(apply, 250) })
  }
  document.getElementById('filters').addEventListener('submit', ev => { ev.preventDefault(); clearTimeout(typing); apply() })
  document.getElementById('filter-clear').onclick = () => { for (const f of listFilters) input(f).value = ''; apply() }
  window.addEventListener('popstate', () => { fromURL(); refresh().catch(e => flash(e.message)) })

  const select = document.getElementById('create-template')
  let templates = [] // without them the list still works, unfiltered by template
  try { templates = await api('GET', '/templates') } catch (e) { flash('read templates: ' + e.message) }
  const name = t => (t.aliases && t.aliases[0]) || t.templateID
  select.replaceChildren(...templates.map(t => el('option', { value: t.templateID }, name(t))))
  input('template').replaceChildren(el('option', { value: '' }, 'any'),
    ...templates.map(t => el('option', { value: t.templateID }, name(t))))
  fromURL()
  every(3000, refresh)

  document.getElementById('create').addEventListener('submit', ev => {
    ev.preventDefault()
    act('create sandbox', async () => {
      let metadata
      try { metadata = parsePairs(document.getElementById('create-metadata').value) } catch (e) { throw new Error('metadata: ' + e.message) }
      const timeout = parseInt(document.getElementById('create-timeout').value, 10) || undefined
      const sb = await api('POST', '/sandboxes', { templateID: select.value, timeout, metadata })
      await refresh()
      return 'created ' + sb.sandboxID
    })
  })
}

// ---- one sandbox ----
function sandboxPage () {
  const id = sandboxID
  const info = document.getElementById('sb-info')
  let state = ''
  const refresh = async () => {
    let sb
    try { sb = await api('GET', '/sandboxes/' + encodeURIComponent(id)) } catch (e) {
      state = 'gone'
      document.getElementById('sb-state').replaceChildren(stateBadge('gone'))
      throw e
    }
    state = sb.state
    document.getElementById('sb-state').replaceChildren(stateBadge(sb.state))
    const rows = [['Template', sb.alias || sb.templateID], ['Host', sb.clientID], ['CPU', sb.cpuCount],
      ['Memory', sb.memoryMB + ' MiB'], ['Disk', sb.diskSizeMB + ' MiB'], ['Started', new Date(sb.startedAt).toLocaleString() + ' (' + age(sb.startedAt) + ' ago)'],
      ['Expires', new Date(sb.endAt).toLocaleString() + ' (' + until(sb.endAt) + ', then ' + (sb.lifecycle?.onTimeout || 'kill') + ')'],
      ['Metadata', metadataText(sb.metadata) || '—'], ['envd', sb.envdVersion]]
    info.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]))
  }
  every(3000, refresh)
  const timeoutInput = document.getElementById('sb-timeout')
  document.getElementById('sb-pause').onclick = () => act('pause', async () => { await actions.pause(id); await refresh() })
  document.getElementById('sb-resume').onclick = () => act('resume', async () => { await actions.resume(id, parseInt(timeoutInput.value, 10)); await refresh() })
  document.getElementById('sb-fork').onclick = () => act('fork', async () => {
    const [fork] = await api('POST', '/sandboxes/' + encodeURIComponent(id) + '/fork', { count: 1 })
    if (!fork?.sandbox) throw new Error('fork: ' + (fork?.error?.message || 'no sandbox started'))
    location.href = '/dashboard/sandboxes/' + encodeURIComponent(fork.sandbox.sandboxID)
  })
  document.getElementById('sb-kill').onclick = () => act('kill', async () => { await actions.kill(id); location.href = '/dashboard/' })
  document.getElementById('sb-set-timeout').onclick = () => act('set timeout', async () => { await actions.setTimeout(id, parseInt(timeoutInput.value, 10)); await refresh() })

  metricsChart(id, () => state)
  portsView(id, () => state)
  logsView(id)
  terminalView(id, () => state)
  filesView(id)
}

// metricsChart draws CPU and memory as two polylines over time: the sandbox's history
// (its agent samples envd every 5 s and keeps the last 2 hours) loaded when the page opens,
// then the new samples as they come.
function metricsChart (id, stateOf) {
  const svg = document.getElementById('metrics')
  const samples = []
  const keep = 1440 // what the agent keeps: 2 hours at one sample every 5 s
  const ns = 'http://www.w3.org/2000/svg'
  const draw = () => {
    while (svg.firstChild) svg.firstChild.remove()
    for (const y of [0, 50, 100]) {
      const l = document.createElementNS(ns, 'line')
      l.setAttribute('x1', 0); l.setAttribute('x2', 400); l.setAttribute('y1', 130 - y * 1.2); l.setAttribute('y2', 130 - y * 1.2)
      l.setAttribute('stroke', '#e4e7ea'); svg.append(l)
    }
    // x is time: the oldest sample at the left, the newest at the right (at least a minute
    // across, so a new sandbox's first samples do not fill the width).
    const last = samples.length ? samples[samples.length - 1].timestampUnix : 0
    const first = samples.length ? Math.min(samples[0].timestampUnix, last - 60) : 0
    const x = s => (400 * (s.timestampUnix - first) / Math.max(1, last - first)).toFixed(1)
    const line = (val, color) => {
      if (samples.length === 0) return
      const y = s => (130 - Math.min(100, val(s)) * 1.2).toFixed(1)
      const p = document.createElementNS(ns, 'polyline')
      p.setAttribute('points', samples.map(s => `${x(s)},${y(s)}`).join(' '))
      p.setAttribute('fill', 'none'); p.setAttribute('stroke', color); p.setAttribute('stroke-width', 2)
      svg.append(p)
      if (samples.length > 120) return // a dot per sample only while they are apart
      for (const s of samples) { // so that one sample shows too
        const c = document.createElementNS(ns, 'circle')
        c.setAttribute('cx', x(s)); c.setAttribute('cy', y(s))
        c.setAttribute('r', 2.5); c.setAttribute('fill', color)
        svg.append(c)
      }
    }
    line(s => s.cpuUsedPct, '#c4501b')
    line(s => s.memTotal ? 100 * s.memUsed / s.memTotal : 0, '#2a6fb0')
    svg.dataset.samples = samples.length
  }
  draw()
  let loaded = false
  every(2500, async () => {
    // The first call loads the history (paused sandboxes have one too); later ones ask
    // only for what came after the newest sample shown.
    if (loaded && stateOf() !== 'running') return
    const after = samples.length ? samples[samples.length - 1].timestampUnix + 1 : null
    const m = await api('GET', `/sandboxes/${encodeURIComponent(id)}/metrics` + (after ? `?start=${after}` : ''))
    loaded = true
    if (!m.length) return
    samples.push(...m)
    samples.splice(0, Math.max(0, samples.length - keep))
    const s = samples[samples.length - 1]
    document.getElementById('metrics-now').textContent =
      `${stateOf() === 'running' ? 'now' : 'last'}: CPU ${s.cpuUsedPct.toFixed(1)}% of ${s.cpuCount}, memory ${bytes(s.memUsed)} of ${bytes(s.memTotal)}, disk ${bytes(s.diskUsed)} of ${bytes(s.diskTotal)}`
    draw()
  })
}

// portsView lists the sandbox's listening ports with links that open them in a new tab:
// host-routed (each port its own origin) when that name resolves, else /proxy/ID/PORT/.
function portsView (id, stateOf) {
  const ul = document.getElementById('ports')
  every(3000, async () => {
    if (stateOf() !== 'running') {
      ul.replaceChildren(el('li', {}, 'the sandbox is not running'))
      return
    }
    const res = await request('GET', `/dashboard/sbx/${encodeURIComponent(id)}/ports`)
    ul.replaceChildren(...(res.ports.length
      ? res.ports.map(p => el('li', { 'data-port': String(p.port) },
        el('a', { href: p.url, target: '_blank', rel: 'noopener' }, String(p.port)),
        ' ', el('small', {}, `${p.address} · ${p.form === 'host' ? 'own origin' : 'path form'}`)))
      : [el('li', {}, 'no listening ports')]))
  })
}

function logsView (id) {
  const pre = document.getElementById('logs')
  every(5000, async () => {
    const res = await api('GET', `/v2/sandboxes/${encodeURIComponent(id)}/logs?limit=200`)
    const lines = (res.logs || []).map(l => new Date(l.timestamp).toLocaleTimeString() + ' ' + (l.level ? l.level.toUpperCase() + ' ' : '') + (l.message || l.line))
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4
    pre.textContent = lines.join('\n') || 'no log entries'
    if (atBottom) pre.scrollTop = pre.scrollHeight
  })
}

// terminalView runs a shell in the sandbox over a WebSocket. When the stream ends (the
// sandbox paused, the network dropped) it reconnects to the same shell, by pid, once the
// sandbox runs again; when the shell exits it starts a new one.
function terminalView (id, stateOf) {
  const status = document.getElementById('term-status')
  const term = new window.Terminal({ cursorBlink: true, fontSize: 13, scrollback: 5000, convertEol: false })
  const fit = new window.FitAddon.FitAddon()
  term.loadAddon(fit)
  term.open(document.getElementById('terminal'))
  fit.fit()
  window.hearthTerminal = term // tests read the screen through it
  let ws = null
  let retry = 500
  let pid = 0 // the shell to reattach to
  const enc = new TextEncoder()
  term.onData(d => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d)) })
  // Copy and paste as terminals on Linux do: Ctrl+Shift+C copies the selection and
  // Ctrl+Shift+V pastes (Cmd+C / Cmd+V on a Mac, and the context menu, work without this).
  // Plain Ctrl+C and Ctrl+V stay the shell's. The copy goes through the browser's copy
  // event, which xterm.js fills with the selection: it needs no clipboard permission and
  // works on plain http too. A paste is left to the browser, whose paste event xterm.js
  // sends to the shell (bracketed, when the shell asks for that).
  term.attachCustomKeyEventHandler(ev => {
    if (ev.type !== 'keydown' || !ev.ctrlKey || !ev.shiftKey || ev.altKey || ev.metaKey) return true
    if (ev.code === 'KeyC') {
      if (term.hasSelection()) document.execCommand('copy')
      ev.preventDefault() // not the browser's own Ctrl+Shift+C (developer tools)
      return false
    }
    if (ev.code === 'KeyV') return false // the browser pastes into xterm.js's input
    return true
  })
  term.onResize(({ cols, rows }) => {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'resize', cols, rows }))
  })
  window.addEventListener('resize', () => fit.fit())
  const connect = () => {
    if (stateOf() !== 'running') { status.textContent = 'waiting for the sandbox to run'; setTimeout(connect, 1000); return }
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:'
    const q = new URLSearchParams({ cols: term.cols, rows: term.rows, csrf, pid })
    ws = new WebSocket(`${proto}//${location.host}/dashboard/sbx/${encodeURIComponent(id)}/terminal?${q}`)
    ws.binaryType = 'arraybuffer'
    status.textContent = 'connecting'
    ws.onopen = () => {
      status.textContent = 'connected'; document.body.dataset.terminal = 'connected'; retry = 500
      ws.send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows })) // a reattached shell has the old size
    }
    ws.onmessage = ev => {
      if (typeof ev.data === 'string') { // control: which shell this is
        const m = JSON.parse(ev.data)
        if (m.type === 'pty') {
          if (pid && !m.reattached) term.write('\r\n\x1b[2m[the previous shell is gone; this is a new one]\x1b[0m\r\n')
          pid = m.pid
          document.body.dataset.terminalPid = m.pid
        }
        return
      }
      term.write(new Uint8Array(ev.data))
    }
    ws.onclose = ev => {
      document.body.dataset.terminal = 'closed'
      const why = ev.reason || 'disconnected'
      status.textContent = why + ' — reconnecting'
      if (ev.code === 4003) { pid = 0; term.write('\r\n\x1b[2m[' + why + '; starting a new shell]\x1b[0m\r\n') }
      else if (ev.code !== 4001) term.write('\r\n\x1b[2m[' + why + ']\x1b[0m\r\n')
      setTimeout(connect, retry)
      retry = Math.min(retry * 2, 5000)
    }
  }
  connect()
}

function filesView (id) {
  const pathInput = document.getElementById('files-path')
  const tbody = document.querySelector('#files tbody')
  const base = `/dashboard/sbx/${encodeURIComponent(id)}/files`
  const load = async (path) => {
    const res = await request('GET', base + '?' + new URLSearchParams({ path }))
    pathInput.value = res.path
    tbody.replaceChildren(...res.entries.map(e => el('tr', { 'data-name': e.name },
      el('td', {}, e.type === 'dir'
        ? el('a', { href: '#', onclick: ev => { ev.preventDefault(); open(e.path) } }, e.name + '/')
        : el('a', { href: base + '/download?' + new URLSearchParams({ path: e.path }), download: e.name }, e.name + (e.symlinkTarget ? ' → ' + e.symlinkTarget : ''))),
      el('td', {}, e.type === 'dir' ? '' : bytes(e.size)),
      el('td', {}, el('code', {}, e.permissions)),
      el('td', {}, new Date(e.modTime).toLocaleString()),
      el('td', { class: 'actions' }, el('button', { class: 'danger', onclick: () => act('delete ' + e.name, async () => { await request('DELETE', base + '?' + new URLSearchParams({ path: e.path })); await load(pathInput.value) }) }, 'Delete')))))
  }
  const open = path => load(path).catch(e => flash(e.message))
  const upload = async files => {
    for (const f of files) {
      const dir = pathInput.value.replace(/\/+$/, '')
      await act('upload ' + f.name, () => request('POST', base + '/upload?' + new URLSearchParams({ path: dir + '/' + f.name }), f, { 'Content-Type': 'application/octet-stream' }))
    }
    await open(pathInput.value)
  }
  document.getElementById('files-nav').addEventListener('submit', ev => { ev.preventDefault(); open(pathInput.value) })
  document.getElementById('files-up').onclick = () => open(pathInput.value.replace(/\/[^/]*\/?$/, '') || '/')
  document.getElementById('files-input').addEventListener('change', ev => upload(ev.target.files))
  const dz = document.getElementById('dropzone')
  dz.addEventListener('dragover', ev => { ev.preventDefault(); dz.classList.add('over') })
  dz.addEventListener('dragleave', () => dz.classList.remove('over'))
  dz.addEventListener('drop', ev => { ev.preventDefault(); dz.classList.remove('over'); upload(ev.dataTransfer.files) })
  const waitRunning = () => open(pathInput.value)
  setTimeout(waitRunning, 300)
}

// ---- Templates ----
function templatesPage () {
  const tbody = document.querySelector('#templates tbody')
  let shown = ''
  const refresh = async () => {
    const ts = await api('GET', '/templates')
    tbody.replaceChildren(...ts.map(t => el('tr', { 'data-id': t.templateID },
      el('td', {}, el('a', { href: '#', onclick: ev => { ev.preventDefault(); showBuilds(t.templateID).catch(e => flash(e.message)) } }, (t.aliases || [])[0] || t.templateID)),
      el('td', {}, el('code', {}, t.templateID)), el('td', {}, stateBadge(t.buildStatus)),
      el('td', {}, t.cpuCount), el('td', {}, t.memoryMB + ' MiB'), el('td', {}, t.diskSizeMB ? t.diskSizeMB + ' MiB' : '—'),
      el('td', {}, new Date(t.updatedAt).toLocaleString()), el('td', {}, t.public ? 'yes' : 'no'))))
    if (shown) await showBuilds(shown)
  }
  const showBuilds = async (tid) => {
    shown = tid
    const t = await api('GET', '/templates/' + encodeURIComponent(tid))
    document.getElementById('builds-section').hidden = false
    document.getElementById('builds-of').textContent = (t.aliases || [])[0] || t.templateID
    document.querySelector('#builds tbody').replaceChildren(...(t.builds.length
      ? t.builds.map(b => el('tr', { 'data-build': b.buildID },
        el('td', {}, el('code', {}, b.buildID)), el('td', {}, stateBadge(b.status)),
        el('td', {}, new Date(b.createdAt).toLocaleString()), el('td', {}, b.finishedAt ? new Date(b.finishedAt).toLocaleString() : '—'),
        el('td', { class: 'actions' }, el('button', { onclick: () => act('read build log', () => showLog(tid, b.buildID)) }, 'Log'))))
      : [el('tr', {}, el('td', { colspan: 5 }, 'no builds through the API (built on an agent with hearth template build)'))]))
  }
  const showLog = async (tid, bid) => {
    const lines = []
    for (let offset = 0; ; ) { // the status endpoint pages the log by offset
      const st = await api('GET', `/templates/${encodeURIComponent(tid)}/builds/${encodeURIComponent(bid)}/status?` + new URLSearchParams({ logsOffset: String(offset) }))
      const entries = st.logEntries || []
      lines.push(...entries.map(e => new Date(e.timestamp).toLocaleTimeString() + ' ' + (e.step ? '[' + e.step + '] ' : '') + e.message))
      if (entries.length === 0 || lines.length > 20000) {
        if (st.reason?.message) lines.push('error' + (st.reason.step ? ' at step ' + st.reason.step : '') + ': ' + st.reason.message)
        break
      }
      offset += entries.length
    }
    document.getElementById('build-log-title').hidden = false
    document.getElementById('build-log-id').textContent = bid
    const pre = document.getElementById('build-log')
    pre.hidden = false
    pre.textContent = lines.join('\n') || 'no log entries'
  }
  every(10000, refresh)
}

// ---- API keys ----
function keysPage () {
  const tbody = document.querySelector('#keys tbody')
  const refresh = async () => {
    const keys = await api('GET', '/api-keys')
    tbody.replaceChildren(...keys.map(k => el('tr', { 'data-id': k.id },
      el('td', {}, k.name), el('td', {}, el('code', {}, k.mask)),
      el('td', {}, new Date(k.createdAt).toLocaleString()),
      el('td', {}, k.lastUsed ? new Date(k.lastUsed).toLocaleString() : 'never'),
      el('td', { class: 'actions' }, el('button', { class: 'danger', onclick: () => act('revoke ' + k.name, async () => { await api('DELETE', '/api-keys/' + encodeURIComponent(k.id)); await refresh() }) }, 'Revoke')))))
  }
  every(10000, refresh)
  document.getElementById('key-create').addEventListener('submit', ev => {
    ev.preventDefault()
    act('create key', async () => {
      const k = await api('POST', '/api-keys', { name: document.getElementById('key-name').value })
      document.getElementById('key-new-value').textContent = k.key
      document.getElementById('key-new').hidden = false
      await refresh()
    })
  })
}

if (page === 'sandboxes') sandboxesPage().catch(e => flash(e.message))
else if (page === 'sandbox') sandboxPage()
else if (page === 'keys') keysPage()
else if (page === 'templates') templatesPage()
