// The TypeScript SDK against a real server: every method, streams read
// chunk by chunk while the command still runs, binary round trips, large
// streamed files, events, AbortSignal, and every error class the server can
// be made to answer. The last test is the route walk.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, readFileSync, writeFileSync } from "node:fs";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { join } from "node:path";
import { execFileSync } from "node:child_process";

import {
  Client, AuthError, BadRequestError, ConflictError, ExecTimeoutError, ForbiddenError, LimitError,
  MethodNotAllowedError, NotFoundError, SandboxDestroyedError, FileNotFoundError, StacyVMError,
  UnsupportedMediaTypeError, UnavailableError, UnimplementedError, InternalError, MisdirectedRequestError,
  ROUTES, NOT_WRAPPED,
} from "../dist/index.js";
import { startServer, openapiOperations, API_KEY, ORIGIN, REPO } from "./server.mjs";

let server;
const hits = [];
const recordingFetch = (input, init) => {
  const u = new URL(input instanceof Request ? input.url : input);
  hits.push([init?.method ?? "GET", u.pathname]);
  return fetch(input, init);
};
// Terminals go over a WebSocket, not fetch: recorded the same way.
class RecordingWebSocket extends WebSocket {
  constructor(url, protocols) {
    hits.push(["GET", new URL(url).pathname]);
    super(url, protocols);
  }
}
let c;
const uid = () => Math.random().toString(16).slice(2, 10);

before(async () => {
  server = await startServer();
  c = new Client(server.url, { apiKey: API_KEY, fetch: recordingFetch, WebSocket: RecordingWebSocket });
});
after(async () => {
  await server?.stop();
});

test("sandbox lifecycle", async () => {
  const owner = "owner-" + uid();
  const s = await c.spawn({ image: "img/x:1", provider: "mock", memory_mb: 256, vcpus: 1, ttl: 600, owner_id: owner,
    metadata: { k: "v" }, network: "none" });
  assert.match(s.id, /^sb-[0-9a-f]{16,}$/);
  assert.equal(s.state, "running");
  assert.equal(s.owner_id, owner);
  assert.deepEqual(s.metadata, { k: "v" });
  assert.equal((await c.get(s.id)).expires_at, s.expires_at);
  assert.deepEqual((await c.list({ owner_id: owner, state: "running", provider: "mock" })).map((x) => x.id), [s.id]);
  assert.ok((await c.extend(s.id, "2h")).expires_at > s.expires_at);
  assert.ok(Array.isArray(await c.logs(s.id, 10)));
  await c.destroy(s.id);
  await assert.rejects(c.get(s.id), (e) => e instanceof SandboxDestroyedError && e instanceof NotFoundError && e.status === 404 && e.requestId !== "");
  assert.ok((await c.list({ owner_id: owner, state: "destroyed" })).some((x) => x.id === s.id));
  assert.ok((await c.prune()) >= 0);
  let inside;
  await c.withSandbox({ ttl: 60 }, async (sb) => { inside = sb.id; assert.equal((await c.get(sb.id)).state, "running"); });
  await assert.rejects(c.exec(inside, "true"), SandboxDestroyedError);
});

test("exec buffered, timeout, streamed chunk by chunk, abort", async () => {
  await c.withSandbox({ ttl: "10m" }, async (sb) => {
    const r = await c.exec(sb.id, "echo out; echo err >&2; exit 7");
    assert.deepEqual([r.exit_code, r.stdout, r.stderr], [7, "out\n", "err\n"]);
    assert.equal((await c.exec(sb.id, "printf", { args: ["%s|", "a b", "$X"], env: { X: "1" }, workdir: "/tmp" })).stdout, "a b|$X|");
    await assert.rejects(c.exec(sb.id, "echo before; sleep 30", { timeout: 0.3 }), (e) =>
      e instanceof ExecTimeoutError && e.status === 408 && e.result.stdout === "before\n" && e.result.timed_out);

    // The command waits for a file the test writes only after reading the
    // first chunk: the chunk must arrive before the command ends.
    const it = c.execStream(sb.id, "echo first; while [ ! -f go ]; do sleep 0.02; done; echo second >&2; exit 3");
    const first = await it.next();
    assert.deepEqual(first.value, { type: "chunk", stream: "stdout", data: "first\n" });
    await c.writeFile(sb.id, "go", "");
    const rest = [];
    for await (const f of it) rest.push(f);
    assert.deepEqual(rest[0], { type: "chunk", stream: "stderr", data: "second\n" });
    assert.equal(rest.at(-1).type, "exit");
    assert.equal(rest.at(-1).exit_code, 3);

    const frames = [];
    for await (const f of c.execStream(sb.id, "echo a; sleep 30", { timeout: "300ms" })) frames.push(f);
    assert.ok(frames.at(-1).timed_out && frames.at(-1).exit_code === -1);

    // Aborting a stream kills the command: its marker file never appears.
    const ac = new AbortController();
    const stream = c.execStream(sb.id, "echo go; sleep 1; touch aborted-late", {}, { signal: ac.signal });
    assert.equal((await stream.next()).value.data, "go\n");
    ac.abort();
    await assert.rejects(stream.next(), (e) => e.name === "AbortError");
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(await c.glob(sb.id, "/workspace/aborted-late"), []);
    // An already aborted signal: nothing is sent.
    await assert.rejects(c.health({ signal: AbortSignal.abort() }), (e) => e.name === "AbortError");
  });
});

test("terminal: output before exit, resize, refused control, exit code, errors", async () => {
  await c.withSandbox({ ttl: "10m" }, async (sb) => {
    const t = await c.terminal(sb.id, { cols: 100, rows: 30, command: "sh" });
    assert.match(t.url, /^ws:\/\/.*\/terminal\?.*cols=100/);
    t.send("echo hi\n");
    // The terminal echoes what was typed ("echo hi"), then the output follows.
    let out = await t.readUntil("echo hi\r\n");
    while (out.split("hi\r\n").length < 3) out += await t.readUntil("\n");
    t.send(new TextEncoder().encode("stty size\n"));
    await t.readUntil("30 100");
    t.resize(120, 40);
    t.send("stty size\n");
    await t.readUntil("40 120");
    t.resize(0, 0); // refused: the error arrives on the read side, the session goes on
    await assert.rejects(t.readUntil("never printed"), (e) => e instanceof BadRequestError && e.code === "BAD_REQUEST");
    t.send("exit 3\n");
    assert.equal(await t.wait(), 3);
    assert.equal(t.exitCode, 3);
    assert.equal(await t.recv(), null);

    // Iterating yields the chunks until the program ends.
    const t2 = await c.terminal(sb.id, { command: "sh -c 'printf done; exit 4'" });
    const chunks = [];
    for await (const b of t2) chunks.push(b);
    assert.match(Buffer.concat(chunks).toString(), /done/);
    assert.equal(t2.exitCode, 4);

    // Closing early, or aborting the signal, ends the session: its
    // processes are killed.
    const ac = new AbortController();
    const t3 = await c.terminal(sb.id, { command: "sh", signal: ac.signal });
    t3.send("sleep 1; touch late-marker\n");
    ac.abort();
    assert.equal(await t3.recv().catch(() => null), null);
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(await c.glob(sb.id, "/workspace/late-marker"), []);

    await assert.rejects(c.terminal("sb-00000000000000000000"), (e) => e instanceof NotFoundError);
    await assert.rejects(c.terminal(sb.id, { cols: 5000 }), RangeError);
    await assert.rejects(new Client(server.url, { apiKey: "wrong" }).terminal(sb.id), AuthError);
  });
});

test("files: text, binary, streamed large upload and download", async () => {
  await c.withSandbox({ ttl: "10m" }, async (sb) => {
    await c.writeFile(sb.id, "dir/a.txt", "héllo\n", 0o600);
    assert.equal(await c.readText(sb.id, "/workspace/dir/a.txt"), "héllo\n");
    const blob = new Uint8Array(256 * 64).map((_, i) => i % 256);
    await c.writeFile(sb.id, "dir/b.bin", blob);
    assert.deepEqual(await c.readFile(sb.id, "dir/b.bin"), blob);
    const st = await c.stat(sb.id, "dir/a.txt");
    assert.deepEqual([st.path, st.size, st.mode, st.is_dir], ["/workspace/dir/a.txt", 7, "0600", false]);
    assert.deepEqual((await c.listFiles(sb.id, "dir")).map((f) => f.path).sort(), ["/workspace/dir/a.txt", "/workspace/dir/b.bin"]);
    assert.ok((await c.listFiles(sb.id)).length > 0);
    assert.deepEqual((await c.glob(sb.id, "/workspace/dir/*")).sort(), ["/workspace/dir/a.txt", "/workspace/dir/b.bin"]);
    await c.move(sb.id, "dir/a.txt", "dir/c.txt");
    await c.chmod(sb.id, "dir/c.txt", "0755");
    assert.equal((await c.stat(sb.id, "dir/c.txt")).mode, "0755");
    await assert.rejects(c.readFile(sb.id, "dir/a.txt"), (e) => e instanceof FileNotFoundError && e.code === "FILE_NOT_FOUND");
    await assert.rejects(c.deleteFile(sb.id, "dir"), ConflictError);
    await c.deleteFile(sb.id, "dir", true);
    assert.deepEqual(await c.glob(sb.id, "/workspace/dir/*"), []);

    // 24 MiB from a file stream (Node's Readable is an AsyncIterable).
    const src = join(server.dir, "big.bin");
    const big = randomBytes(24 << 20);
    writeFileSync(src, big);
    const want = createHash("sha256").update(big).digest("hex");
    assert.equal(await c.upload(sb.id, "big.bin", createReadStream(src), "0640"), big.length);
    assert.equal((await c.stat(sb.id, "big.bin")).mode, "0640");
    assert.equal(await c.upload(sb.id, "gen.bin", (function* () { for (let i = 0; i < 100; i++) yield new Uint8Array(4096).fill(i); })()), 409600);
    assert.equal(await c.upload(sb.id, "blob.bin", new Blob([blob])), blob.length);
    assert.equal(await c.upload(sb.id, "text.txt", "plain"), 5);
    const dest = join(server.dir, "back.bin");
    await pipeline(Readable.fromWeb((await c.download(sb.id, "big.bin")).body), createWriteStream(dest));
    assert.equal(createHash("sha256").update(readFileSync(dest)).digest("hex"), want);
    let n = 0;
    for await (const piece of c.iterFile(sb.id, "big.bin")) n += piece.length;
    assert.equal(n, big.length);
  });
});

test("pause, resume, exec resumes a paused sandbox, 409 on illegal transitions", async () => {
  assert.equal((await c.provider("mock")).capabilities.pause, true);
  await c.withSandbox({ ttl: "10m" }, async (s) => {
    await c.writeFile(s.id, "kept.txt", "still here");
    const p = await c.pause(s.id);
    assert.equal(p.id, s.id);
    assert.equal(p.state, "paused");
    assert.equal((await c.get(s.id)).state, "paused");
    await assert.rejects(c.pause(s.id), (e) => e instanceof ConflictError && e.status === 409 && /paused/.test(e.message));
    assert.equal((await c.resume(s.id)).state, "running");
    assert.equal(await c.readText(s.id, "kept.txt"), "still here");
    await assert.rejects(c.resume(s.id), (e) => e instanceof ConflictError && e.status === 409 && /running/.test(e.message));
    await c.pause(s.id);
    assert.equal((await c.exec(s.id, "cat kept.txt")).stdout, "still here");
    assert.equal((await c.get(s.id)).state, "running");
  });
  await assert.rejects(c.pause("sb-00000000000000000000"), NotFoundError);
});

test("idle_timeout and on_idle round-trip on spawns and templates", async () => {
  await c.withSandbox({ ttl: "10m", idle_timeout: 3600, on_idle: "destroy" }, async (s) => {
    assert.equal(s.idle_timeout, 3600);
    assert.equal(s.on_idle, "destroy");
    const got = await c.get(s.id);
    assert.equal(got.idle_timeout, 3600);
    assert.equal(got.on_idle, "destroy");
  });
  const name = "idle-" + uid();
  const t = await c.createTemplate({ name, image: "img/t:1", idle_timeout: 1800, on_idle: "pause" });
  try {
    assert.equal(t.idle_timeout, 1800);
    assert.equal(t.on_idle, "pause");
    const s = await c.spawnTemplate(name, { ttl: "5m" });
    try {
      assert.equal(s.idle_timeout, 1800);
      assert.equal(s.on_idle, "pause");
    } finally {
      await c.destroy(s.id);
    }
  } finally {
    await c.deleteTemplate(name);
  }
});

test("environments: specs, 400, 409, a quick build followed to its end, spawn-config", async () => {
  const owner = "envs-" + uid();
  let spec;
  try {
    spec = await c.createEnvironmentSpec({ name: "tools", base_image: "stacyvm/busybox:test", owner_id: owner });
  } catch (e) {
    // Environments need dockerd; CI (STACYVM_TEST_DOCKER=1) always has it.
    assert.ok(e instanceof UnavailableError && e.status === 503, String(e));
    assert.notEqual(process.env.STACYVM_TEST_DOCKER, "1", "environments unavailable although Docker is expected");
    for (const p of [c.listEnvironmentSpecs(), c.getEnvironmentSpec("envs-none"), c.createEnvironmentBuild("envs-none"),
      c.listEnvironmentBuilds(), c.getEnvironmentBuild("envb-none"), c.cancelEnvironmentBuild("envb-none"),
      c.environmentSpawnConfig("envb-none"), c.followEnvironmentBuildLog("envb-none").next()]) {
      await assert.rejects(p, UnavailableError);
    }
    return;
  }
  assert.equal(spec.owner_id, owner);
  assert.deepEqual(spec.python_packages, []);
  assert.deepEqual((await c.listEnvironmentSpecs({ owner_id: owner })).map((x) => x.id), [spec.id]);
  assert.deepEqual(await c.getEnvironmentSpec(spec.id), spec);
  await assert.rejects(c.createEnvironmentSpec({ name: "tools", base_image: "stacyvm/busybox:test", owner_id: owner }), ConflictError);
  await assert.rejects(
    c.createEnvironmentSpec({ name: "bad", base_image: "stacyvm/busybox:test", python_packages: ["not a package!"], owner_id: owner }),
    (e) => e instanceof BadRequestError && /python_packages\[0\]/.test(e.message));
  await assert.rejects(c.getEnvironmentSpec("envs-none"), NotFoundError);
  await assert.rejects(c.createEnvironmentBuild(spec.id, ["nowhere"]), BadRequestError);

  const b = await c.createEnvironmentBuild(spec.id);
  assert.equal(b.spec_id, spec.id);
  assert.deepEqual(b.targets, ["local"]);
  const frames = [];
  for await (const f of c.followEnvironmentBuildLog(b.id)) frames.push(f);
  const last = frames.at(-1);
  assert.equal(last.type, "status", JSON.stringify(frames));
  assert.equal(last.status, "ready", JSON.stringify(frames));
  assert.ok(last.image);
  const got = await c.getEnvironmentBuild(b.id);
  assert.equal(got.status, "ready");
  assert.equal(got.image, last.image);
  assert.deepEqual(got.artifacts.map((a) => a.target), ["local"]);
  const rows = await c.listEnvironmentBuilds({ owner_id: owner, limit: 10 });
  assert.deepEqual(rows.map((r) => [r.build.id, r.spec.id]), [[b.id, spec.id]]);
  const cfg = await c.environmentSpawnConfig(b.id);
  assert.deepEqual(cfg, { build_id: b.id, ready: true, image: last.image, provider: cfg.provider });
  await assert.rejects(c.cancelEnvironmentBuild(b.id), ConflictError);
  await assert.rejects(c.followEnvironmentBuildLog("envb-none").next(), NotFoundError);
});

test("templates", async () => {
  const name = "ts-" + uid();
  const t = await c.createTemplate({ name, image: "img/t:1", setup: ["echo ready > setup.txt"], env: { T: "1" }, ttl_seconds: 600 });
  assert.equal(t.version, 1);
  await assert.rejects(c.createTemplate({ name, image: "img/t:1" }), ConflictError);
  assert.ok((await c.listTemplates()).some((x) => x.name === name));
  const t2 = await c.updateTemplate(name, { ...t, description: "updated" });
  assert.equal(t2.version, 2);
  assert.equal((await c.getTemplate(name)).description, "updated");
  const s = await c.spawnTemplate(name, { ttl: "5m", metadata: { from: "template" } });
  try {
    assert.equal(s.template, name);
    assert.equal(await c.readText(s.id, "setup.txt"), "ready\n");
    assert.equal((await c.exec(s.id, "echo $T")).stdout, "1\n");
  } finally {
    await c.destroy(s.id);
  }
  await c.deleteTemplate(name);
  await assert.rejects(c.getTemplate(name), NotFoundError);
});

test("pool status and a claim", async () => {
  const name = "tspool-" + uid();
  await c.createTemplate({ name, image: "img/t:1", pool_size: 1, setup: ["echo warm > w.txt"] });
  try {
    const find = async () => (await c.poolStatus()).pools.find((p) => p.name === "template:" + name);
    const deadline = Date.now() + 60_000;
    let pool = await find();
    while (!pool || pool.ready !== 1) {
      assert.ok(Date.now() < deadline, "pool never filled: " + JSON.stringify(pool));
      await new Promise((r) => setTimeout(r, 50));
      pool = await find();
    }
    assert.equal(pool.target, 1);
    assert.equal(pool.template, name);
    assert.equal(pool.policy, "cold");
    const s = await c.spawnTemplate(name, { owner_id: "ts-pool" });
    try {
      assert.equal(await c.readText(s.id, "w.txt"), "warm\n");
      assert.equal((await find()).claimed, 1);
    } finally {
      await c.destroy(s.id);
    }
  } finally {
    await c.deleteTemplate(name);
  }
});

test("system routes", async () => {
  const provs = await c.providers();
  assert.deepEqual(provs.map((p) => p.name), ["mock"]);
  assert.equal((await c.provider("mock")).capabilities.isolation, "none");
  assert.deepEqual(await c.testProviders(), { mock: true });
  assert.ok(Array.isArray(await c.snapshots()));
  assert.equal(typeof (await c.poolStatus()).enabled, "boolean");
  assert.equal((await c.health()).status, "ok");
  assert.equal(typeof (await c.metrics()).spawns_total, "number");
  assert.match(await c.prometheusMetrics(), /stacyvm_/);
  assert.match(await c.openapi(), /^openapi: 3/);
  await assert.rejects(c.provider("nope"), NotFoundError);
});

test("events: live, then resumed", async () => {
  const stream = await c.events(); // subscribed once this resolves
  const s = await c.spawn({ ttl: 60 });
  await c.destroy(s.id);
  const mine = [];
  for await (const ev of stream) {
    if (ev.sandbox_id !== s.id) continue;
    mine.push(ev);
    if (ev.type === "sandbox.destroyed") break;
  }
  assert.equal(mine[0].type, "sandbox.created");
  assert.equal(mine[0].data.provider, "mock");
  assert.equal(mine.at(-1).type, "sandbox.destroyed");
  const replay = await c.events({ lastEventId: mine[0].id });
  for await (const ev of replay) {
    assert.ok(ev.id > mine[0].id && ev.id <= mine[1].id);
    break;
  }
});

test("error classes from the live server", async () => {
  await assert.rejects(c.spawn({ ttl: "soon" }), (e) => e instanceof BadRequestError && e.status === 400 && e.hint !== "" && e.requestId !== "");
  await assert.rejects(new Client(server.url, { apiKey: "wrong" }).list(), (e) => e instanceof AuthError && e.status === 401);
  await assert.rejects(c.get("sb-00000000000000000000"), (e) => e.constructor === NotFoundError);
  // The mock cannot limit disk space, and says so.
  await assert.rejects(c.spawn({ disk_mb: 100, ttl: 60 }), (e) => e instanceof UnimplementedError && e.status === 501 && e.hint !== "");
  // A browser page on an origin the server does not list; then one it does.
  const foreign = new Client(server.url, { apiKey: API_KEY, headers: { Origin: "http://evil.example" }, fetch: recordingFetch });
  await assert.rejects(foreign.spawn(), ForbiddenError);
  const allowed = new Client(server.url, { apiKey: API_KEY, headers: { Origin: ORIGIN } });
  const s = await allowed.spawn({ ttl: 60 });
  await allowed.destroy(s.id);
  const owner = "limited-" + uid();
  const made = [await c.spawn({ owner_id: owner, ttl: 60 }), await c.spawn({ owner_id: owner, ttl: 60 })];
  await assert.rejects(c.spawn({ owner_id: owner, ttl: 60 }), (e) => e instanceof LimitError && e.status === 429 && e.code === "RESOURCE_LIMIT");
  for (const m of made) await c.destroy(m.id);
  await assert.rejects(c.request("PATCH", "/api/v1/sandboxes"), MethodNotAllowedError);
  await assert.rejects(c.request("POST", "/api/v1/sandboxes", { body: "{}", headers: { "Content-Type": "text/plain" } }), UnsupportedMediaTypeError);
  await assert.rejects(c.spawn({ provider: "nope" }), (e) => e instanceof NotFoundError && e instanceof StacyVMError);
});

test("error classes no live request can provoke on the mock", async () => {
  const answers = {
    "/api/v1/providers": [503, { code: "UNAVAILABLE", message: "docker is down", request_id: "r1", hint: "start it" }],
    "/api/v1/snapshots": [501, { code: "UNIMPLEMENTED", message: "no", request_id: "r2" }],
    "/api/v1/health": [500, { code: "INTERNAL_ERROR", message: "see log", request_id: "r3" }],
    "/api/v1/metrics": [421, { code: "MISDIRECTED_REQUEST", message: "host", request_id: "r4" }],
    "/api/v1/sandboxes": [429, { code: "RESOURCE_LIMIT", message: "full", request_id: "r5" }, { "Retry-After": "7" }],
    "/api/v1/pool/status": [502, "<html>bad gateway</html>", { "X-Request-ID": "r6" }],
  };
  const fake = async (u) => {
    const [status, body, headers] = answers[new URL(u).pathname];
    return new Response(typeof body === "string" ? body : JSON.stringify(body), { status, headers });
  };
  const m = new Client("http://sdk.test", { fetch: fake });
  await assert.rejects(m.providers(), (e) => e instanceof UnavailableError && e.requestId === "r1" && e.hint === "start it");
  await assert.rejects(m.snapshots(), UnimplementedError);
  await assert.rejects(m.health(), InternalError);
  await assert.rejects(m.metrics(), MisdirectedRequestError);
  await assert.rejects(m.spawn(), (e) => e instanceof LimitError && e.retryAfter === 7);
  await assert.rejects(m.poolStatus(), (e) => e instanceof InternalError && e.status === 502 && e.requestId === "r6");
});

test("docs quick start runs verbatim, and the example agent loop", () => {
  const page = readFileSync(join(REPO, "docs", "sdk-typescript.md"), "utf8");
  const code = /```ts\n([\s\S]*?)```/.exec(page.split("## Quick start")[1])[1];
  assert.ok(code.trim().split("\n").length <= 12);
  assert.ok(code.includes("http://127.0.0.1:7423"));
  const file = join(REPO, "sdk", "typescript", "dist", "quickstart.test-run.mjs");
  writeFileSync(file, code.replace("http://127.0.0.1:7423", server.url).replace('from "stacyvm"', 'from "./index.js"'));
  const env = { ...process.env, STACYVM_API_KEY: API_KEY, STACYVM_URL: server.url };
  const out = execFileSync(process.execPath, [file], { env, encoding: "utf8" });
  assert.match(out, /hello from sandbox/);
  assert.match(out, /"type":"exit","exit_code":0/);
  const agent = execFileSync(process.execPath, [join(REPO, "sdk", "typescript", "examples", "agent-loop.mjs")], { env, encoding: "utf8" });
  assert.match(agent, /tests pass/);
  assert.match(agent.trim(), /DONE$/);
});

test("route walk: every operation has a method, and every route was called", () => {
  const ops = openapiOperations();
  assert.ok(ops.length > 30);
  const missing = ops.filter(([, , op]) => !(op in ROUTES) && !(op in NOT_WRAPPED)).map(([, , op]) => op);
  assert.deepEqual(missing, [], "operations without an SDK method");
  for (const [op, name] of Object.entries(ROUTES)) {
    assert.ok(ops.some(([, , o]) => o === op), `ROUTES names ${op}, which the API no longer has`);
    assert.equal(typeof Client.prototype[name], "function", `Client lacks ${name} (${op})`);
  }
  const uncalled = [];
  for (const [method, path, op] of ops) {
    if (op in NOT_WRAPPED) continue;
    const re = new RegExp("^" + path.replace(/\{[^}]+\}/g, "[^/]+") + "$");
    if (!hits.some(([m, p]) => m === method && re.test(p))) uncalled.push(`${method} ${path} (${op})`);
  }
  assert.deepEqual(uncalled, [], "routes no test called through the SDK");
});
