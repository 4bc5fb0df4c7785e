import { errorFrom, errorFromFrame, ExecTimeoutError, IncompleteStreamError, StacyVMError } from "./errors.js";
import { keyProtocol, opened, Terminal, TERMINAL_PROTOCOL, type WebSocketConstructor } from "./terminal.js";
import type {
  BuildLogFrame, CallOptions, Duration, EnvironmentBuild, EnvironmentBuildEntry, EnvironmentSpec, EnvironmentSpecInput, ExecFrame, ExecOptions, ExecResult, FileInfo, Health, ListOptions, MetricsSummary,
  Mode, PoolStatus, Provider, ProviderDetail, Sandbox, Snapshot, SpawnConfig, SpawnOptions, StacyEvent, Template,
  TemplateSpawnOptions, TerminalOptions, UploadSource,
} from "./types.js";

const API = "/api/v1";
const ENV = `${API}/environments`;

export interface ClientOptions {
  /** Sent as X-API-Key. */
  apiKey?: string;
  /** Sent as X-User-ID: the owner of the sandboxes this client creates. */
  userId?: string;
  /** Extra headers on every request. */
  headers?: Record<string, string>;
  /** A fetch to use instead of the global one. */
  fetch?: typeof fetch;
  /** A WebSocket constructor for terminals, instead of the global one
   * (which Node has from 22 on, or from 20 with --experimental-websocket). */
  WebSocket?: WebSocketConstructor;
}

interface Req extends CallOptions {
  query?: Record<string, string | undefined>;
  json?: unknown;
  body?: BodyInit;
  headers?: Record<string, string>;
}

function seg(s: string): string {
  if (!s) throw new TypeError("an ID or name is required");
  return encodeURIComponent(s);
}

function sb(id: string, suffix = ""): string {
  return `${API}/sandboxes/${seg(id)}${suffix}`;
}

/** A Go duration string from seconds, or a string as is. */
export function duration(d: Duration | undefined): string | undefined {
  if (d === undefined) return undefined;
  return typeof d === "number" ? (Number.isInteger(d) ? `${d}s` : `${Math.round(d * 1000)}ms`) : d;
}

function mode(m: Mode | undefined): string | undefined {
  if (m === undefined) return undefined;
  return typeof m === "number" ? m.toString(8).padStart(4, "0") : m;
}

function compact<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function base64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function toStream(src: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): ReadableStream<Uint8Array> {
  const it = Symbol.asyncIterator in src
    ? (src as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]()
    : (src as Iterable<Uint8Array>)[Symbol.iterator]();
  return new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      const { value, done } = await it.next();
      if (done) ctrl.close();
      else ctrl.enqueue(value instanceof Uint8Array ? value : new Uint8Array(value as ArrayBuffer));
    },
    async cancel() {
      await it.return?.();
    },
  });
}

/** Lines of a response body, as they arrive. */
async function* lines(resp: Response): AsyncGenerator<string> {
  if (!resp.body) return;
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        yield buf.slice(0, nl).replace(/\r$/, "");
        buf = buf.slice(nl + 1);
      }
    }
    buf += dec.decode();
    if (buf) yield buf;
  } finally {
    // Leaving early (break, abort, an error) closes the connection, which
    // kills a streamed command.
    await reader.cancel().catch(() => {});
  }
}

/** The API of one StacyVM server. Works in Node ≥ 18 and browsers. */
export class Client {
  readonly baseUrl: string;
  private readonly headers: Record<string, string>;
  private readonly fetch: typeof fetch;
  private readonly apiKey?: string;
  private readonly WebSocket?: WebSocketConstructor;

  constructor(baseUrl = "http://127.0.0.1:7423", opts: ClientOptions = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.headers = { Accept: "application/json", ...(opts.headers ?? {}) };
    if (opts.apiKey) this.headers["X-API-Key"] = opts.apiKey;
    if (opts.userId) this.headers["X-User-ID"] = opts.userId;
    this.fetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
    this.apiKey = opts.apiKey;
    this.WebSocket = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  }

  /** Sends one request and throws the typed error of an error answer. */
  async request(method: string, path: string, r: Req = {}): Promise<Response> {
    const url = new URL(this.baseUrl + path);
    for (const [k, v] of Object.entries(r.query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
    const headers: Record<string, string> = { ...this.headers, ...(r.headers ?? {}) };
    let body = r.body;
    if (r.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(r.json);
    }
    const init: RequestInit & { duplex?: string } = { method, headers, body, signal: r.signal };
    if (body instanceof ReadableStream) init.duplex = "half"; // a streamed upload
    const resp = await this.fetch(url, init);
    if (resp.status >= 400) {
      const err = errorFrom(resp.status, await resp.text(), resp.headers);
      if (err instanceof ExecTimeoutError) {
        err.result = { exit_code: -1, stdout: "", stderr: "", duration: "", ...(err.body as object), timed_out: true } as ExecResult;
      }
      throw err;
    }
    return resp;
  }

  private async json<T>(method: string, path: string, r: Req = {}): Promise<T> {
    return (await (await this.request(method, path, r)).json()) as T;
  }

  private async none(method: string, path: string, r: Req = {}): Promise<void> {
    await (await this.request(method, path, r)).arrayBuffer();
  }

  // -- sandboxes -------------------------------------------------------

  /** POST /api/v1/sandboxes. */
  spawn(opts: SpawnOptions = {}, call: CallOptions = {}): Promise<Sandbox> {
    return this.json("POST", `${API}/sandboxes`, { json: compact({ ...opts, ttl: duration(opts.ttl) }), ...call });
  }

  /** Spawns a sandbox, runs fn with it, and destroys it whatever happens. */
  async withSandbox<T>(opts: SpawnOptions, fn: (s: Sandbox) => Promise<T>, call: CallOptions = {}): Promise<T> {
    const s = await this.spawn(opts, call);
    try {
      return await fn(s);
    } finally {
      await this.destroy(s.id).catch(() => {});
    }
  }

  get(id: string, call: CallOptions = {}): Promise<Sandbox> {
    return this.json("GET", sb(id), call);
  }

  list(opts: ListOptions = {}, call: CallOptions = {}): Promise<Sandbox[]> {
    return this.json("GET", `${API}/sandboxes`, { query: { ...opts }, ...call });
  }

  extend(id: string, ttl: Duration, call: CallOptions = {}): Promise<Sandbox> {
    return this.json("POST", sb(id, "/extend"), { json: { ttl: duration(ttl) }, ...call });
  }

  /** Freezes a running sandbox (state "paused"); memory and files stay. Exec,
   * file operations and terminals resume it first unless the server sets
   * sandbox.auto_resume: false. ConflictError (409) in a state that cannot
   * pause; UnimplementedError (501) without capabilities.pause. */
  pause(id: string, call: CallOptions = {}): Promise<Sandbox> {
    return this.json("POST", sb(id, "/pause"), call);
  }

  /** Thaws a paused sandbox (state "running"); ConflictError (409) when it is not paused. */
  resume(id: string, call: CallOptions = {}): Promise<Sandbox> {
    return this.json("POST", sb(id, "/resume"), call);
  }

  destroy(id: string, call: CallOptions = {}): Promise<void> {
    return this.none("DELETE", sb(id), call);
  }

  /** Destroys every expired sandbox now; resolves to how many. */
  async prune(call: CallOptions = {}): Promise<number> {
    return (await this.json<{ pruned: number }>("DELETE", `${API}/sandboxes`, call)).pruned;
  }

  logs(id: string, lines?: number, call: CallOptions = {}): Promise<string[]> {
    return this.json("GET", sb(id, "/logs"), { query: { lines: lines?.toString() }, ...call });
  }

  // -- exec ------------------------------------------------------------

  private execBody(command: string, o: ExecOptions, stream: boolean) {
    if (!command) throw new TypeError("command is required");
    return compact({ command, args: o.args, env: o.env, workdir: o.workdir, timeout: duration(o.timeout), stream: stream || undefined });
  }

  /** Runs a command and waits. A non-zero exit is a result; a timeout
   * throws ExecTimeoutError whose `result` has the output so far. */
  exec(id: string, command: string, opts: ExecOptions = {}, call: CallOptions = {}): Promise<ExecResult> {
    return this.json("POST", sb(id, "/exec"), { json: this.execBody(command, opts, false), ...call });
  }

  /** Runs a command and yields its output as it is produced, then the
   * exit frame. Leaving the loop early (or aborting) kills the command. */
  async *execStream(id: string, command: string, opts: ExecOptions = {}, call: CallOptions = {}): AsyncGenerator<ExecFrame> {
    const resp = await this.request("POST", sb(id, "/exec"), {
      json: this.execBody(command, opts, true), headers: { Accept: "application/x-ndjson" }, ...call,
    });
    for await (const line of lines(resp)) {
      if (!line.trim()) continue;
      const f = JSON.parse(line);
      if (typeof f.stream === "string") {
        yield { type: "chunk", stream: f.stream, data: f.data ?? "" };
      } else if (f.type === "exit") {
        yield { type: "exit", exit_code: f.exit_code, timed_out: f.timed_out, duration: f.duration };
        return;
      } else if (f.type === "error") {
        throw errorFromFrame(f);
      }
    }
    throw new IncompleteStreamError("exec stream ended without an exit status");
  }

  /** GET …/terminal: an interactive session on a pseudo-terminal (default
   * the sandbox's login shell, 80×24) over a WebSocket; the API key travels
   * as a subprotocol, so it works in browsers too. Aborting the signal, or
   * `close()`, kills the session's processes. */
  async terminal(id: string, opts: TerminalOptions = {}): Promise<Terminal> {
    const WS = this.WebSocket;
    if (!WS) {
      throw new TypeError("no WebSocket here: use Node ≥ 22 (or node --experimental-websocket on 20), or pass ClientOptions.WebSocket");
    }
    for (const [k, v] of [["cols", opts.cols], ["rows", opts.rows]] as const) {
      if (v !== undefined && !(Number.isInteger(v) && v >= 1 && v <= 1000)) throw new RangeError(`${k} must be an integer from 1 to 1000`);
    }
    const url = new URL(this.baseUrl + sb(id, "/terminal"));
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    for (const [k, v] of Object.entries({ command: opts.command, workdir: opts.workdir, cols: opts.cols?.toString(), rows: opts.rows?.toString() })) {
      if (v !== undefined) url.searchParams.set(k, v);
    }
    const protocols = [TERMINAL_PROTOCOL];
    if (this.apiKey) protocols.push(keyProtocol(this.apiKey));
    opts.signal?.throwIfAborted();
    const ws = new WS(url.toString(), protocols);
    const term = new Terminal(ws, url.toString()); // listening before the first message can arrive
    try {
      await opened(ws, opts.signal);
    } catch (e) {
      if (opts.signal?.aborted) throw e;
      // The refused handshake's status is not visible to scripts: ask the
      // API about the sandbox, which throws its typed error when it is the
      // cause (unknown, destroyed, a wrong key).
      await this.get(id, { signal: opts.signal });
      throw new StacyVMError(`the server refused the terminal for ${id}: its provider may have no terminals ` +
        "(capabilities.terminal), or this Origin is not allowed", { code: "UNIMPLEMENTED" });
    }
    return term;
  }

  // -- files -----------------------------------------------------------

  /** Writes text or bytes through JSON (bounded by the server's file
   * limit; use upload for large files). */
  writeFile(id: string, path: string, content: string | Uint8Array, fileMode?: Mode, call: CallOptions = {}): Promise<void> {
    const json = typeof content === "string"
      ? compact({ path, content, mode: mode(fileMode) })
      : compact({ path, content: base64(content), encoding: "base64", mode: mode(fileMode) });
    return this.none("POST", sb(id, "/files"), { json, ...call });
  }

  /** A file's bytes. */
  async readFile(id: string, path: string, call: CallOptions = {}): Promise<Uint8Array> {
    return new Uint8Array(await (await this.download(id, path, call)).arrayBuffer());
  }

  async readText(id: string, path: string, call: CallOptions = {}): Promise<string> {
    return (await this.download(id, path, call)).text();
  }

  /** The file as a streaming Response: `.body` is a ReadableStream that
   * never holds the whole file. */
  download(id: string, path: string, call: CallOptions = {}): Promise<Response> {
    return this.request("GET", sb(id, "/files"), { query: { path }, headers: { Accept: "application/octet-stream" }, ...call });
  }

  /** The file's bytes as they arrive. */
  async *iterFile(id: string, path: string, call: CallOptions = {}): AsyncGenerator<Uint8Array> {
    const resp = await this.download(id, path, call);
    if (!resp.body) return;
    const reader = resp.body.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        yield value;
      }
    } finally {
      await reader.cancel().catch(() => {});
    }
  }

  /** PUT …/files/raw: streams the source into the file; resolves to the
   * bytes written. In browsers pass a Blob or File (streamed request
   * bodies need HTTP/2 there). */
  async upload(id: string, path: string, source: UploadSource, fileMode?: Mode, call: CallOptions = {}): Promise<number> {
    let body: BodyInit;
    if (typeof source === "string" || source instanceof Uint8Array || source instanceof ArrayBuffer ||
        source instanceof Blob || source instanceof ReadableStream) {
      body = source as BodyInit;
    } else {
      body = toStream(source);
    }
    const res = await this.json<{ size: number }>("PUT", sb(id, "/files/raw"), {
      query: { path, mode: mode(fileMode) }, body, headers: { "Content-Type": "application/octet-stream" }, ...call,
    });
    return res.size;
  }

  deleteFile(id: string, path: string, recursive = false, call: CallOptions = {}): Promise<void> {
    return this.none("DELETE", sb(id, "/files"), { query: { path, recursive: recursive ? "true" : undefined }, ...call });
  }

  listFiles(id: string, path = "/workspace", call: CallOptions = {}): Promise<FileInfo[]> {
    return this.json("GET", sb(id, "/files/list"), { query: { path }, ...call });
  }

  stat(id: string, path: string, call: CallOptions = {}): Promise<FileInfo> {
    return this.json("GET", sb(id, "/files/stat"), { query: { path }, ...call });
  }

  glob(id: string, pattern: string, call: CallOptions = {}): Promise<string[]> {
    return this.json("GET", sb(id, "/files/glob"), { query: { pattern }, ...call });
  }

  move(id: string, oldPath: string, newPath: string, call: CallOptions = {}): Promise<void> {
    return this.none("POST", sb(id, "/files/move"), { json: { old_path: oldPath, new_path: newPath }, ...call });
  }

  chmod(id: string, path: string, fileMode: Mode, call: CallOptions = {}): Promise<void> {
    return this.none("POST", sb(id, "/files/chmod"), { json: { path, mode: mode(fileMode) }, ...call });
  }

  // -- templates -------------------------------------------------------

  createTemplate(t: Template, call: CallOptions = {}): Promise<Template> {
    return this.json("POST", `${API}/templates`, { json: t, ...call });
  }

  listTemplates(call: CallOptions = {}): Promise<Template[]> {
    return this.json("GET", `${API}/templates`, call);
  }

  getTemplate(name: string, call: CallOptions = {}): Promise<Template> {
    return this.json("GET", `${API}/templates/${seg(name)}`, call);
  }

  updateTemplate(name: string, t: Template, call: CallOptions = {}): Promise<Template> {
    return this.json("PUT", `${API}/templates/${seg(name)}`, { json: t, ...call });
  }

  deleteTemplate(name: string, call: CallOptions = {}): Promise<void> {
    return this.none("DELETE", `${API}/templates/${seg(name)}`, call);
  }

  spawnTemplate(name: string, opts: TemplateSpawnOptions = {}, call: CallOptions = {}): Promise<Sandbox> {
    return this.json("POST", `${API}/templates/${seg(name)}/spawn`, { json: compact({ ...opts, ttl: duration(opts.ttl) }), ...call });
  }

  // -- environments (docs/environments.md) -----------------------------

  /** An image recipe; BadRequestError for an invalid one, ConflictError when
   * the owner has a spec of that name. */
  createEnvironmentSpec(spec: EnvironmentSpecInput, call: CallOptions = {}): Promise<EnvironmentSpec> {
    return this.json("POST", `${ENV}/specs`, { json: compact({ python_packages: [], ...spec }), ...call });
  }

  listEnvironmentSpecs(opts: { owner_id?: string } = {}, call: CallOptions = {}): Promise<EnvironmentSpec[]> {
    return this.json("GET", `${ENV}/specs`, { query: { ...opts }, ...call });
  }

  getEnvironmentSpec(id: string, call: CallOptions = {}): Promise<EnvironmentSpec> {
    return this.json("GET", `${ENV}/specs/${seg(id)}`, call);
  }

  /** Queues a build of a spec (targets default to ["local"]). */
  createEnvironmentBuild(specId: string, targets?: string[], call: CallOptions = {}): Promise<EnvironmentBuild> {
    return this.json("POST", `${ENV}/builds`, { json: compact({ spec_id: specId, targets }), ...call });
  }

  listEnvironmentBuilds(opts: { owner_id?: string; limit?: number } = {}, call: CallOptions = {}): Promise<EnvironmentBuildEntry[]> {
    return this.json("GET", `${ENV}/builds`, { query: { owner_id: opts.owner_id, limit: opts.limit?.toString() }, ...call });
  }

  getEnvironmentBuild(id: string, call: CallOptions = {}): Promise<EnvironmentBuild> {
    return this.json("GET", `${ENV}/builds/${seg(id)}`, call);
  }

  /** Cancels a queued or running build; ConflictError once it finished. */
  cancelEnvironmentBuild(id: string, call: CallOptions = {}): Promise<EnvironmentBuild> {
    return this.json("POST", `${ENV}/builds/${seg(id)}/cancel`, call);
  }

  environmentSpawnConfig(id: string, call: CallOptions = {}): Promise<SpawnConfig> {
    return this.json("GET", `${ENV}/builds/${seg(id)}/spawn-config`, call);
  }

  /** Yields the build's log as it is written, ending with the frame whose
   * type is "status" (IncompleteStreamError if the stream ends without it).
   * Breaking out of the loop only stops following. */
  async *followEnvironmentBuildLog(id: string, call: CallOptions = {}): AsyncGenerator<BuildLogFrame> {
    const resp = await this.request("GET", `${ENV}/builds/${seg(id)}/logs`, {
      headers: { Accept: "application/x-ndjson" }, ...call,
    });
    for await (const line of lines(resp)) {
      if (!line.trim()) continue;
      const f = JSON.parse(line);
      if (f.type === "status") {
        yield { type: "status", status: f.status, image: f.image, reason: f.reason };
        return;
      }
      if (typeof f.skipped === "number") yield { type: "skipped", skipped: f.skipped };
      if (typeof f.data === "string") yield { type: "data", data: f.data };
    }
    throw new IncompleteStreamError("build log ended without the build's status");
  }

  // -- system ----------------------------------------------------------

  providers(call: CallOptions = {}): Promise<Provider[]> {
    return this.json("GET", `${API}/providers`, call);
  }

  provider(name: string, call: CallOptions = {}): Promise<ProviderDetail> {
    return this.json("GET", `${API}/providers/${seg(name)}`, call);
  }

  testProviders(call: CallOptions = {}): Promise<Record<string, boolean>> {
    return this.json("POST", `${API}/providers/test`, call);
  }

  snapshots(call: CallOptions = {}): Promise<Snapshot[]> {
    return this.json("GET", `${API}/snapshots`, call);
  }

  poolStatus(call: CallOptions = {}): Promise<PoolStatus> {
    return this.json("GET", `${API}/pool/status`, call);
  }

  health(call: CallOptions = {}): Promise<Health> {
    return this.json("GET", `${API}/health`, call);
  }

  metrics(call: CallOptions = {}): Promise<MetricsSummary> {
    return this.json("GET", `${API}/metrics`, call);
  }

  async prometheusMetrics(call: CallOptions = {}): Promise<string> {
    return (await this.request("GET", "/metrics", { headers: { Accept: "text/plain" }, ...call })).text();
  }

  async openapi(call: CallOptions = {}): Promise<string> {
    return (await this.request("GET", `${API}/openapi.yaml`, { headers: { Accept: "application/yaml" }, ...call })).text();
  }

  /** Subscribes to server-sent events. The subscription is live once the
   * returned promise resolves; iterate the stream (it never ends on its
   * own: break, or abort the signal). `lastEventId` first replays the kept
   * events after that one. */
  async events(opts: { lastEventId?: number } & CallOptions = {}): Promise<EventStream> {
    const headers: Record<string, string> = { Accept: "text/event-stream" };
    if (opts.lastEventId !== undefined) headers["Last-Event-ID"] = String(opts.lastEventId);
    return new EventStream(await this.request("GET", `${API}/events`, { headers, signal: opts.signal }));
  }
}

/** An open GET /api/v1/events: an async iterator of events. */
export class EventStream implements AsyncIterable<StacyEvent> {
  /** The ID to resume from after a disconnect. */
  lastEventId = "";
  private readonly lines: AsyncGenerator<string>;

  constructor(resp: Response) {
    this.lines = lines(resp);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<StacyEvent> {
    let data: string[] = [];
    let id = "";
    let event = "";
    try {
      for await (const line of this.lines) {
        if (line === "") {
          if (data.length) {
            const raw = JSON.parse(data.join("\n"));
            if (id) this.lastEventId = id;
            yield { ...raw, type: raw.type ?? event, id: raw.id ?? Number(id) };
          }
          data = [];
          event = "";
          continue;
        }
        if (line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const name = i < 0 ? line : line.slice(0, i);
        let value = i < 0 ? "" : line.slice(i + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (name === "data") data.push(value);
        else if (name === "id") id = value;
        else if (name === "event") event = value;
      }
    } finally {
      await this.close();
    }
  }

  /** Ends the subscription. */
  async close(): Promise<void> {
    await this.lines.return(undefined);
  }
}
