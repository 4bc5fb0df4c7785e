// Latency of commands.run('true') through the e2b SDK against StacyVM's
// own exec API, on one sandbox of one server, in one run:
//   node bench.mjs [mock|docker] [N]
// The SDK runs every command as `/bin/bash -l -c …`, so the API is timed
// both with its usual `/bin/sh -c true` and with that same bash argv.
import { Sandbox } from 'e2b'
import { startServer, pointSDK, api } from './harness.mjs'

const providerName = process.argv[2] ?? 'mock'
const n = Number(process.argv[3] ?? 50)

function pct(xs, p) {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]
}
function report(name, xs) {
  const f = (v) => v.toFixed(1).padStart(7)
  console.log(`${name.padEnd(44)} p50 ${f(pct(xs, 50))} ms  p95 ${f(pct(xs, 95))} ms  p99 ${f(pct(xs, 99))} ms  (n=${xs.length})`)
}
async function time(fn) {
  const out = []
  for (let i = 0; i < 5; i++) await fn() // warm-up
  for (let i = 0; i < n; i++) {
    const t = performance.now()
    await fn()
    out.push(performance.now() - t)
  }
  return out
}

const srv = await startServer({ docker: providerName === 'docker' })
try {
  pointSDK(srv.url, srv.apiKey)
  await api(srv, 'POST', '/api/v1/templates', { name: 'bench', image: 'stacyvm/debian:test', provider: providerName })
  const sbx = await Sandbox.create('bench')
  const exec = (body) => () => api(srv, 'POST', `/api/v1/sandboxes/${sbx.sandboxId}/exec`, body)
  console.log(`provider ${providerName}, sandbox ${sbx.sandboxId}`)
  report("e2b SDK commands.run('true')", await time(() => sbx.commands.run('true')))
  report('StacyVM API exec "true" (/bin/sh -c)', await time(exec({ command: 'true' })))
  report('StacyVM API exec /bin/bash -l -c true', await time(exec({ command: '/bin/bash', args: ['-l', '-c', 'true'] })))
  await sbx.kill()
} finally {
  await srv.stop()
}
