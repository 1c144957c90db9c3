// Loaded with `node --import ./localhost-dns.mjs`: resolves *.localhost to loopback, as
// browsers, macOS and systemd-resolved do and glibc alone (without nss-myhostname) does not,
// so that https://PORT-ID.hearth.localhost:PORT URLs the SDK builds reach `hearth dev`.
import dns from 'node:dns'

const lookup = dns.lookup
dns.lookup = function (hostname, options, callback) {
  if (typeof options === 'function') [options, callback] = [{}, options]
  if (typeof options === 'number') options = { family: options }
  if (typeof hostname === 'string' && /(^|\.)localhost\.?$/i.test(hostname)) {
    const v6 = options?.family === 6
    const address = v6 ? '::1' : '127.0.0.1'
    const family = v6 ? 6 : 4
    if (options?.all) return process.nextTick(callback, null, [{ address, family }])
    return process.nextTick(callback, null, address, family)
  }
  return lookup.call(this, hostname, options, callback)
}
