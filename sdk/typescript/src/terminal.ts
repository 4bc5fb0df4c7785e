import { errorFromFrame, StacyVMError } from "./errors.js";

/** The terminal's WebSocket subprotocol. */
export const TERMINAL_PROTOCOL = "stacyvm.terminal.v1";
/** Prefix of the subprotocol that carries the API key: browsers cannot set
 * headers on a WebSocket handshake. */
export const KEY_PROTOCOL_PREFIX = "stacyvm.key.";

/** What the SDK needs of a WebSocket constructor: the global one (Node ≥ 22,
 * Node 20 with --experimental-websocket, browsers) or a compatible one such
 * as the `ws` package's. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;

/** The API key as a subprotocol: base64url of its UTF-8 bytes, unpadded. */
export function keyProtocol(key: string): string {
  let s = "";
  for (const b of new TextEncoder().encode(key)) s += String.fromCharCode(b);
  return KEY_PROTOCOL_PREFIX + btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

type Item = { data: Uint8Array } | { error: Error } | { end: true };

/**
 * An open interactive terminal (GET …/terminal). `recv()` resolves to the
 * next bytes the terminal printed, and to `null` once the program has ended
 * (then `exitCode` is set); iterating it yields the same chunks. Closing it
 * kills every process of the session.
 */
export class Terminal implements AsyncIterable<Uint8Array> {
  /** The program's exit status, once it has ended. */
  exitCode: number | null = null;
  private readonly queue: Item[] = [];
  private waiter: (() => void) | null = null;
  private ended = false;
  private readonly decoder = new TextDecoder();

  /** @internal Use Client.terminal. */
  constructor(private readonly ws: WebSocket, readonly url: string) {
    ws.binaryType = "arraybuffer";
    ws.addEventListener("message", (ev: MessageEvent) => {
      if (typeof ev.data === "string") {
        let f: Record<string, unknown>;
        try {
          f = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (f.type === "exit") this.exitCode = Number(f.exit_code ?? -1);
        else if (f.type === "error") this.push({ error: errorFromFrame(f) });
        return;
      }
      this.push({ data: new Uint8Array(ev.data as ArrayBuffer) });
    });
    ws.addEventListener("close", (ev: CloseEvent) => {
      if (this.exitCode === null && ev.code !== 1000 && ev.code < 4000) {
        this.push({ error: new StacyVMError(`terminal connection closed (${ev.code} ${ev.reason})`, { code: "UNAVAILABLE" }) });
      }
      this.push({ end: true });
    });
  }

  private push(it: Item): void {
    if (this.ended) return;
    if ("end" in it) this.ended = true;
    this.queue.push(it);
    this.waiter?.();
    this.waiter = null;
  }

  /** Types into the terminal (a string is sent as UTF-8). */
  send(data: string | Uint8Array): void {
    this.ws.send(typeof data === "string" ? new TextEncoder().encode(data) : data);
  }

  resize(cols: number, rows: number): void {
    this.ws.send(JSON.stringify({ type: "resize", cols, rows }));
  }

  /** Signals the foreground job: INT, QUIT, TERM, KILL, HUP, TSTP, CONT,
   * USR1, USR2 or WINCH. */
  signal(name: string): void {
    this.ws.send(JSON.stringify({ type: "signal", signal: name }));
  }

  /** The next output, or null when the session is over. A refused control
   * message rejects here (the session goes on); a failed session rejects
   * with its error class. */
  async recv(): Promise<Uint8Array | null> {
    while (this.queue.length === 0) {
      await new Promise<void>((r) => { this.waiter = r; });
    }
    const it = this.queue[0];
    if ("end" in it) return null; // stays queued: every later recv ends too
    this.queue.shift();
    if ("error" in it) throw it.error;
    return it.data;
  }

  /** Reads until the text so far contains `pattern`; resolves to all of it.
   * Rejects when the session ends first or after `timeoutMs`. */
  async readUntil(pattern: string, timeoutMs = 30_000): Promise<string> {
    let text = "";
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no ${JSON.stringify(pattern)} in the terminal after ${timeoutMs} ms; got ${JSON.stringify(text.slice(-200))}`)), timeoutMs);
    });
    try {
      while (!text.includes(pattern)) {
        const b = await Promise.race([this.recv(), timeout]);
        if (b === null) throw new Error(`terminal ended (exit ${this.exitCode}) before ${JSON.stringify(pattern)}; got ${JSON.stringify(text.slice(-200))}`);
        text += this.decoder.decode(b, { stream: true });
      }
      return text;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reads (and drops) the rest of the output until the program ends;
   * resolves to its exit code. */
  async wait(): Promise<number> {
    while ((await this.recv()) !== null);
    if (this.exitCode === null) throw new StacyVMError("terminal ended without an exit status", { code: "UNAVAILABLE" });
    return this.exitCode;
  }

  /** Ends the session: its processes are killed. */
  close(): void {
    this.ws.close(1000);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    for (let b = await this.recv(); b !== null; b = await this.recv()) yield b;
  }
}

/** Resolves once the server accepted the socket. A refused handshake
 * carries no status for the script to see (browsers and Node alike), so it
 * rejects with a plain Error for the caller to explain. */
export function opened(ws: WebSocket, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => ws.close();
    signal?.addEventListener("abort", onAbort, { once: true });
    const cleanup = () => {
      ws.removeEventListener("open", ok);
      ws.removeEventListener("error", fail);
      ws.removeEventListener("close", fail);
    };
    const fail = () => {
      cleanup();
      signal?.removeEventListener("abort", onAbort);
      reject(signal?.aborted ? signal.reason : new Error("the terminal handshake failed"));
    };
    const ok = () => {
      cleanup();
      resolve();
    };
    ws.addEventListener("open", ok);
    ws.addEventListener("error", fail);
    ws.addEventListener("close", fail);
  });
}
