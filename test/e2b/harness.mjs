// Starts a real `stacyvm serve` for the e2b suite: builds the binaries with
// `go build`, writes a config with a temporary database, listens on a free
// loopback port (the server reports it), and stops the server by its PID.
import { spawn, execFileSync } from 'node:child_process'
import { mkdtempSync, writeFileSync, rmSync, chmodSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

export const dockerWanted = process.env.STACYVM_TEST_DOCKER === '1'
export const prootWanted = process.env.STACYVM_TEST_PROOT === '1'

export function build(dir) {
  const env = { ...process.env, CGO_ENABLED: '0' }
  for (const [out, pkg] of [['stacyvm', './cmd/stacyvm'], ['stacyvm-agent', './cmd/stacyvm-agent']]) {
    execFileSync('go', ['build', '-o', path.join(dir, out), pkg], { cwd: repo, env, stdio: 'inherit' })
  }
}

// startServer resolves to { url, apiKey, stop } once the server listens.
export async function startServer({ docker, proot }) {
  const dir = mkdtempSync(path.join(tmpdir(), 'stacyvm-e2b-'))
  // PRoot sandboxes run as unprivileged users who must reach state_dir
  // below: searchable, not listable (the config holds the API key).
  chmodSync(dir, 0o711)
  build(dir)
  const apiKey = 'e2b-suite-key'
  // The mock is named explicitly: it never loads by accident.
  const enabled = `[${['mock', docker && 'docker', proot && 'proot'].filter(Boolean).join(', ')}]`
  writeFileSync(path.join(dir, 'stacyvm.yaml'), `
server:
  listen: 127.0.0.1:0
  api_key: ${apiKey}
store:
  path: ${path.join(dir, 'stacyvm.db')}
log:
  level: info
provider:
  enabled: ${enabled}
  default: mock
mock:
  dir: ${path.join(dir, 'mock')}
proot:
  images_dir: ${process.env.STACYVM_PROOT_IMAGES || '/var/lib/stacyvm/images'}
  state_dir: ${path.join(dir, 'proot')}
sandbox:
  default_image: stacyvm/debian:test
  max_exec_timeout: 10m
`, { mode: 0o600 })
  const child = spawn(path.join(dir, 'stacyvm'), ['serve', '--config', path.join(dir, 'stacyvm.yaml')], {
    cwd: dir, stdio: ['ignore', 'pipe', 'pipe'],
  })
  let log = ''
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('stacyvm serve did not start in 60 s:\n' + log)), 60_000)
    const onData = (b) => {
      log += b
      const m = /msg="stacyvm serving" addr=(\S+)/.exec(log)
      if (m) { clearTimeout(timer); resolve(m[1]) }
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`stacyvm serve exited ${code}:\n${log}`)) })
  })
  const url = `http://${addr}`
  return {
    url,
    apiKey,
    log: () => log,
    async stop() {
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 30_000))])
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

// pointSDK sets the two variables that point the unchanged SDK at url.
export function pointSDK(url, apiKey) {
  process.env.E2B_API_URL = `${url}/e2b`
  process.env.E2B_SANDBOX_URL = `${url}/e2b/envd`
  process.env.E2B_API_KEY = apiKey
}

// api calls StacyVM's own REST API.
export async function api(srv, method, p, body) {
  const res = await fetch(srv.url + p, {
    method,
    headers: { 'X-API-Key': srv.apiKey, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  })
  const text = await res.text()
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${text}`)
  return text ? JSON.parse(text) : undefined
}
