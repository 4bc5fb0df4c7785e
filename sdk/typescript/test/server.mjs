// A real `stacyvm serve` for the suite: $STACYVM_BIN (or built with go
// build), a free loopback port, a temporary database, the mock provider
// named explicitly, an API key, a per-owner limit of 2 and one allowed
// browser origin.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const API_KEY = "sdk-test-key";
export const ORIGIN = "http://app.example";

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export async function startServer({ provider = "mock", extra = "" } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "stacyvm-ts-"));
  let bin = process.env.STACYVM_BIN;
  if (!bin) {
    bin = join(dir, "stacyvm");
    execFileSync("go", ["build", "-o", bin, "./cmd/stacyvm"], { cwd: REPO, stdio: "inherit" });
    execFileSync("go", ["build", "-o", join(dir, "stacyvm-agent"), "./cmd/stacyvm-agent"],
      { cwd: REPO, stdio: "inherit", env: { ...process.env, CGO_ENABLED: "0" } });
  }
  const port = await freePort();
  const cfg = join(dir, "stacyvm.yaml");
  writeFileSync(cfg, `server:
  listen: 127.0.0.1:${port}
  api_key: ${API_KEY}
  cors_origins: ["${ORIGIN}"]
store:
  path: ${join(dir, "stacyvm.db")}
log:
  level: warn
sandbox:
  max_per_owner: 2
  default_image: test/image:1
provider:
  enabled: [${provider}]
  default: ${provider}
mock:
  dir: ${join(dir, "mock")}
${extra}`);
  const log = join(dir, "server.log");
  const fd = openSync(log, "w");
  const proc = spawn(bin, ["serve", "--config", cfg], { cwd: dir, stdio: ["ignore", fd, fd] });
  let exited = null;
  proc.on("exit", (code) => { exited = code; });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited !== null) throw new Error(`stacyvm serve exited ${exited}:\n${readFileSync(log, "utf8")}`);
    try {
      if ((await fetch(url + "/api/v1/health")).ok) break;
    } catch {}
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error("stacyvm serve not healthy after 60 s:\n" + readFileSync(log, "utf8"));
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    dir,
    async stop() {
      if (exited === null) {
        const done = new Promise((r) => proc.once("exit", r));
        proc.kill("SIGTERM");
        const t = setTimeout(() => proc.kill("SIGKILL"), 30_000);
        await done;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** (METHOD, path template, operationId) of docs/openapi.yaml, read by its
 * layout: paths at two spaces, methods at four. */
export function openapiOperations() {
  const ops = [];
  let path = "", method = "", inPaths = false;
  for (const line of readFileSync(join(REPO, "docs", "openapi.yaml"), "utf8").split("\n")) {
    if (line.startsWith("paths:")) { inPaths = true; continue; }
    if (inPaths && /^\S/.test(line)) break;
    let m;
    if ((m = /^  (\/\S*):\s*$/.exec(line))) path = m[1];
    else if ((m = /^    (get|put|post|delete|patch|head|options):\s*$/.exec(line))) method = m[1].toUpperCase();
    else if ((m = /^      operationId:\s*(\S+)/.exec(line))) ops.push([method, path, m[1]]);
  }
  return ops;
}
