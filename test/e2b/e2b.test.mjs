// The unchanged `e2b` SDK (pinned in package-lock.json) against a real
// `stacyvm serve`, once per provider: the mock, Docker when
// STACYVM_TEST_DOCKER=1 and PRoot when STACYVM_TEST_PROOT=1 (scripts/test
// sets both, so there nothing skips).
// E2B templates name StacyVM templates here, one per provider.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import {
  Sandbox, CommandExitError, TimeoutError, NotFoundError, AuthenticationError, SandboxError,
} from 'e2b'
import { startServer, pointSDK, api, dockerWanted, prootWanted } from './harness.mjs'

const providers = [
  { name: 'mock', template: 'e2b-mock', image: 'stacyvm/debian:test' },
  // The SDK runs every command as /bin/bash -l -c, so the image needs bash.
  { name: 'docker', template: 'e2b-docker', image: 'stacyvm/debian:test' },
  { name: 'proot', template: 'e2b-proot', image: 'stacyvm/debian:test' },
]
const wanted = { mock: true, docker: dockerWanted, proot: prootWanted }

let srv
before(async () => {
  srv = await startServer({ docker: dockerWanted, proot: prootWanted })
  pointSDK(srv.url, srv.apiKey)
  for (const p of providers) {
    if (!wanted[p.name]) continue
    await api(srv, 'POST', '/api/v1/templates', {
      name: p.template, image: p.image, provider: p.name, env: { FROM_TEMPLATE: p.name },
    })
  }
})
after(async () => { await srv?.stop() })

// waitFor polls cond until it holds or 30 s pass.
async function waitFor(what, cond) {
  const deadline = Date.now() + 30_000
  for (;;) {
    if (await cond()) return
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

for (const p of providers) {
  const skip = wanted[p.name] ? false
    : `${p.name} tests need STACYVM_TEST_${p.name.toUpperCase()}=1 and the runtime (scripts/test sets it up)`

  describe(`e2b SDK on the ${p.name} provider`, { skip }, () => {
    let sbx
    const run = `${p.name}-${process.pid}-${Date.now()}`
    before(async () => {
      sbx = await Sandbox.create(p.template, {
        metadata: { suite: run, role: 'main' },
        envs: { GREETING: 'hello from e2b' },
        timeoutMs: 10 * 60_000,
      })
    })
    after(async () => { await sbx?.kill().catch(() => {}) })

    test('create reports an envd version and carries env vars', async () => {
      assert.match(sbx.sandboxId, /^sb-/)
      const r = await sbx.commands.run('echo "$GREETING/$FROM_TEMPLATE"; echo oops >&2')
      assert.equal(r.exitCode, 0)
      assert.equal(r.stdout, `hello from e2b/${p.name}\n`)
      assert.equal(r.stderr, 'oops\n')
      const info = await sbx.getInfo()
      assert.equal(info.envdVersion, '0.5.7')
    })

    test('onStdout streams before the command ends', async () => {
      // The command waits for a file that the test writes only after the
      // first output arrived: it can only finish if output streams.
      await sbx.files.remove('go.flag').catch(() => {})
      const chunks = []
      let released = false
      const r = await sbx.commands.run(
        'echo first; i=0; while [ ! -f go.flag ]; do i=$((i+1)); [ $i -gt 300 ] && exit 9; sleep 0.1; done; echo second',
        {
          timeoutMs: 60_000,
          onStdout: async (d) => {
            chunks.push(d)
            if (!released && chunks.join('').includes('first')) {
              released = true
              await sbx.files.write('go.flag', 'go')
            }
          },
        },
      )
      assert.equal(r.exitCode, 0)
      assert.ok(released, 'first output arrived while the command ran')
      assert.equal(chunks.join(''), 'first\nsecond\n')
    })

    test('non-zero exit is CommandExitError', async () => {
      await assert.rejects(sbx.commands.run('echo bad >&2; exit 3'), (e) => {
        assert.ok(e instanceof CommandExitError, `got ${e}`)
        assert.equal(e.exitCode, 3)
        assert.equal(e.stderr, 'bad\n')
        return true
      })
    })

    test('background command: list, kill, wait', async () => {
      const h = await sbx.commands.run('echo started; sleep 120', { background: true, timeoutMs: 0 })
      assert.ok(h.pid > 0)
      await waitFor('background output', () => h.stdout.includes('started'))
      const listed = await sbx.commands.list()
      assert.ok(listed.some((c) => c.pid === h.pid && c.args.includes('echo started; sleep 120')), JSON.stringify(listed))
      assert.equal(await sbx.commands.kill(h.pid), true)
      await assert.rejects(h.wait(), (e) => e instanceof CommandExitError && e.exitCode !== 0)
      await waitFor('the killed command to leave the list',
        async () => !(await sbx.commands.list()).some((c) => c.pid === h.pid))
      assert.equal(await sbx.commands.kill(h.pid), false)
    })

    test('connect to a running command', async () => {
      const h = await sbx.commands.run('sleep 1; echo late; sleep 120', { background: true, timeoutMs: 0 })
      const seen = []
      const again = await sbx.commands.connect(h.pid, { onStdout: (d) => seen.push(d), timeoutMs: 0 })
      await waitFor('output through connect', () => seen.join('').includes('late'))
      await again.kill()
      await assert.rejects(again.wait(), CommandExitError)
      await assert.rejects(h.wait(), CommandExitError)
    })

    test('a command past its timeout is killed (TimeoutError)', async () => {
      const start = Date.now()
      await assert.rejects(sbx.commands.run('sleep 60', { timeoutMs: 1500 }), TimeoutError)
      assert.ok(Date.now() - start < 30_000)
      await waitFor('the timed-out command to be gone',
        async () => !(await sbx.commands.list()).some((c) => c.args.includes('sleep 60')))
    })

    test('stdin: commands.run with stdin, sendStdin, closeStdin', async () => {
      const h = await sbx.commands.run('cat; echo "[eof]"', { background: true, stdin: true, timeoutMs: 60_000 })
      await sbx.commands.sendStdin(h.pid, 'line one\n')
      // cat answers while its input is still open.
      await waitFor('stdin echoed before it was closed', () => h.stdout.includes('line one\n'))
      assert.ok(!h.stdout.includes('[eof]'))
      await h.sendStdin(new TextEncoder().encode('two\n'))
      await sbx.commands.closeStdin(h.pid)
      const r = await h.wait()
      assert.equal(r.exitCode, 0)
      assert.equal(r.stdout, 'line one\ntwo\n[eof]\n')

      // A command started without stdin reads the null device and refuses input.
      const plain = await sbx.commands.run('sleep 30', { background: true, timeoutMs: 60_000 })
      await assert.rejects(sbx.commands.sendStdin(plain.pid, 'x'), /without stdin/)
      assert.equal(await plain.kill(), true)
      assert.equal((await sbx.commands.run('cat; echo done')).stdout, 'done\n')
    })

    test('PTY: create, sendInput, resize, exit code, kill', async () => {
      const dec = new TextDecoder()
      const enc = new TextEncoder()
      let out = ''
      const pty = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => { out += dec.decode(d, { stream: true }) }, timeoutMs: 60_000 })
      assert.ok(pty.pid > 0)
      await sbx.pty.sendInput(pty.pid, enc.encode('echo "pty-$((6*7))"; stty size\n'))
      await waitFor('PTY output', () => out.includes('pty-42') && out.includes('24 80'))
      await sbx.pty.resize(pty.pid, { cols: 120, rows: 40 })
      await sbx.pty.sendInput(pty.pid, enc.encode('stty size; tty\n'))
      // tty names a real pseudo-terminal device.
      await waitFor('the new size and the tty', () => out.includes('40 120') && /\/dev\/pts\/\d+/.test(out))
      await sbx.pty.sendInput(pty.pid, enc.encode('exit 3\n'))
      await assert.rejects(pty.wait(), (e) => e instanceof CommandExitError && e.exitCode === 3)

      const second = await sbx.pty.create({ cols: 80, rows: 24, onData: () => {}, timeoutMs: 60_000 })
      assert.ok((await sbx.commands.list()).some((c) => c.pid === second.pid))
      assert.equal(await sbx.pty.kill(second.pid), true)
      await assert.rejects(second.wait(), CommandExitError)
      await waitFor('the killed PTY to leave the list',
        async () => !(await sbx.commands.list()).some((c) => c.pid === second.pid))
      // Resizing something that is not a PTY is refused.
      const plain = await sbx.commands.run('sleep 30', { background: true, timeoutMs: 60_000 })
      await assert.rejects(sbx.pty.resize(plain.pid, { cols: 10, rows: 10 }), /not a PTY/)
      await plain.kill()
    })

    test('files: text and binary, list, exists, rename, makeDir, remove', async () => {
      const dir = `/tmp/e2b-files-${run}`
      await sbx.files.write(`${dir}/hello.txt`, 'héllo wörld\n')
      assert.equal(await sbx.files.read(`${dir}/hello.txt`), 'héllo wörld\n')

      const bin = new Uint8Array(256)
      for (let i = 0; i < 256; i++) bin[i] = i
      await sbx.files.write(`${dir}/all.bin`, bin.buffer)
      assert.deepEqual(await sbx.files.read(`${dir}/all.bin`, { format: 'bytes' }), bin)
      await sbx.files.write(`${dir}/empty`, '')
      assert.equal(await sbx.files.read(`${dir}/empty`), '')

      assert.equal(await sbx.files.makeDir(`${dir}/sub/deeper`), true)
      assert.equal(await sbx.files.makeDir(`${dir}/sub/deeper`), false)
      const entries = await sbx.files.list(dir)
      assert.deepEqual(entries.map((e) => `${e.name}:${e.type}`).sort(),
        ['all.bin:file', 'empty:file', 'hello.txt:file', 'sub:dir'])
      assert.equal(entries.find((e) => e.name === 'all.bin').size, 256)
      const deep = await sbx.files.list(dir, { depth: 2 })
      assert.ok(deep.some((e) => e.path === `${dir}/sub/deeper`), JSON.stringify(deep.map((e) => e.path)))

      assert.equal(await sbx.files.exists(`${dir}/hello.txt`), true)
      assert.equal(await sbx.files.exists(`${dir}/nope`), false)
      const moved = await sbx.files.rename(`${dir}/hello.txt`, `${dir}/sub/moved.txt`)
      assert.equal(moved.path, `${dir}/sub/moved.txt`)
      assert.equal(await sbx.files.exists(`${dir}/hello.txt`), false)
      assert.equal(await sbx.files.read(`${dir}/sub/moved.txt`), 'héllo wörld\n')

      await sbx.files.remove(`${dir}/sub`)
      assert.equal(await sbx.files.exists(`${dir}/sub`), false)
      await assert.rejects(sbx.files.read(`${dir}/sub/moved.txt`), NotFoundError)

      await sbx.files.remove(dir)
      assert.equal(await sbx.files.exists(dir), false)

      // Commands and files share the sandbox: relative paths resolve in
      // the working directory for both (the mock runs commands on the
      // host, so only relative paths are shared there).
      await sbx.commands.run(`printf made-by-a-command > from-cmd-${run}.txt`)
      assert.equal(await sbx.files.read(`from-cmd-${run}.txt`), 'made-by-a-command')
      await sbx.files.remove(`from-cmd-${run}.txt`)
    })

    test('watchDir reports changes (polled)', async () => {
      const dir = `/tmp/e2b-watch-${run}`
      assert.equal(await sbx.files.makeDir(dir), true)
      const events = []
      const h = await sbx.files.watchDir(dir, (e) => events.push(`${e.name}:${e.type}`), { timeoutMs: 0 })
      try {
        await sbx.files.write(`${dir}/a.txt`, 'x')
        await waitFor('a create event', () => events.includes('a.txt:create'))
        await sbx.files.remove(`${dir}/a.txt`)
        await waitFor('a remove event', () => events.includes('a.txt:remove'))
      } finally {
        await h.stop()
      }
      await sbx.files.remove(dir)
    })

    test('setTimeout and getInfo', async () => {
      await sbx.setTimeout(5 * 60_000)
      let info = await sbx.getInfo()
      const left = info.endAt.getTime() - Date.now()
      assert.ok(left > 4 * 60_000 && left <= 5 * 60_000 + 5_000, `endAt in ${left} ms`)
      assert.equal(info.sandboxId, sbx.sandboxId)
      assert.equal(info.templateId, p.template)
      assert.deepEqual(info.metadata, { suite: run, role: 'main' })
      assert.equal(info.state, 'running')
      // setTimeout replaces the TTL: it can shorten it too.
      await sbx.setTimeout(2 * 60_000)
      info = await sbx.getInfo()
      assert.ok(info.endAt.getTime() - Date.now() <= 2 * 60_000 + 5_000)
      await sbx.setTimeout(10 * 60_000)
    })

    test('list with metadata filters and paging; connect; kill', async () => {
      const other = await Sandbox.create(p.template, { metadata: { suite: run, role: 'other' } })
      try {
        const mine = await Sandbox.list({ query: { metadata: { suite: run } } }).nextItems()
        assert.deepEqual(mine.map((s) => s.sandboxId).sort(), [sbx.sandboxId, other.sandboxId].sort())
        const only = await Sandbox.list({ query: { metadata: { suite: run, role: 'other' } } }).nextItems()
        assert.deepEqual(only.map((s) => s.sandboxId), [other.sandboxId])

        const pager = Sandbox.list({ query: { metadata: { suite: run } }, limit: 1 })
        const pages = []
        while (pager.hasNext) pages.push(...(await pager.nextItems()).map((s) => s.sandboxId))
        assert.deepEqual(pages, [other.sandboxId, sbx.sandboxId], 'newest first, one per page')

        const again = await Sandbox.connect(other.sandboxId)
        assert.equal((await again.commands.run('echo via-connect')).stdout, 'via-connect\n')
      } finally {
        assert.equal(await other.kill(), true)
      }
      assert.equal(await Sandbox.kill(other.sandboxId), false, 'killing twice says false')
      await assert.rejects(Sandbox.getInfo(other.sandboxId), SandboxError)
      const left = await Sandbox.list({ query: { metadata: { suite: run } } }).nextItems()
      assert.deepEqual(left.map((s) => s.sandboxId), [sbx.sandboxId])
    })

    test('a wrong API key is refused', async () => {
      await assert.rejects(Sandbox.list({ apiKey: 'wrong' }).nextItems(), AuthenticationError)
    })
  })
}
