// Smoke path on a real runtime: a server with only the Docker provider
// spawns stacyvm/busybox:test, and an environment built on the same dockerd. Runs when STACYVM_TEST_DOCKER=1
// (scripts/test sets it after starting dockerd).
import { test } from "node:test";
import assert from "node:assert/strict";

import { Client } from "../dist/index.js";
import { startServer, API_KEY } from "./server.mjs";

const docker = process.env.STACYVM_TEST_DOCKER === "1";

test("docker smoke", { skip: docker ? false : "needs Docker: set STACYVM_TEST_DOCKER=1 (scripts/test does)" }, async () => {
  const server = await startServer({ provider: "docker", extra: "docker:\n  network: none\n" });
  try {
    const c = new Client(server.url, { apiKey: API_KEY });
    await c.withSandbox({ image: "stacyvm/busybox:test", ttl: "5m" }, async (sb) => {
      assert.equal((await c.get(sb.id)).provider, "docker");
      const bytes = new Uint8Array(256).map((_, i) => i);
      await c.writeFile(sb.id, "x.bin", bytes);
      assert.deepEqual(await c.readFile(sb.id, "x.bin"), bytes);
      const r = await c.exec(sb.id, "head -1 /etc/passwd; uname -s");
      assert.equal(r.exit_code, 0);
      assert.match(r.stdout, /root[\s\S]*Linux/);
      const frames = [];
      for await (const f of c.execStream(sb.id, "echo a; sleep 0.2; echo b")) frames.push(f);
      assert.deepEqual(frames.at(-1).exit_code, 0);
      const t = await c.terminal(sb.id, { cols: 90, rows: 20 });
      t.send("stty size; exit 5\n");
      await t.readUntil("20 90", 60_000);
      assert.equal(await t.wait(), 5);
    });
    // An environment built on this dockerd spawns where its spawn-config says.
    const spec = await c.createEnvironmentSpec({ name: "smoke", base_image: "stacyvm/busybox:test", owner_id: "ts-docker" });
    const b = await c.createEnvironmentBuild(spec.id);
    const frames = [];
    for await (const f of c.followEnvironmentBuildLog(b.id)) frames.push(f);
    assert.equal(frames.at(-1).status, "ready", JSON.stringify(frames));
    const cfg = await c.environmentSpawnConfig(b.id);
    assert.equal(cfg.ready, true);
    assert.equal(cfg.provider, "docker");
    await c.withSandbox({ image: cfg.image, provider: cfg.provider, ttl: "5m" }, async (sb) => {
      assert.equal((await c.get(sb.id)).image, cfg.image);
      assert.equal((await c.exec(sb.id, "echo built")).stdout, "built\n");
    });
  } finally {
    await server.stop();
  }
});
