// An interactive terminal in the sandbox: xterm.js (vendored, see
// scripts/vendor-xterm.sh) over the terminal WebSocket
// (docs/api.md#terminal). Bytes travel as binary messages both ways;
// resize is a JSON text message.
import { Terminal } from "/ui/vendor/xterm/xterm.mjs";
import { FitAddon } from "/ui/vendor/addon-fit/addon-fit.mjs";
import { apiKey } from "./api.js";

const PROTOCOL = "stacyvm.terminal.v1";

function base64url(s) {
  const bytes = new TextEncoder().encode(s);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// loadCSS adds xterm's stylesheet once, when the first terminal opens.
function loadCSS() {
  if (document.getElementById("xterm-css")) return;
  document.head.append(Object.assign(document.createElement("link"), { id: "xterm-css", rel: "stylesheet", href: "/ui/vendor/xterm/xterm.css" }));
}

// openTerminal attaches a terminal to el and connects it. onStatus
// receives ("connecting"|"open"|"exit"|"error"|"closed", detail). F6
// moves keyboard focus out of the terminal (every other key goes to the
// program, Tab and Esc included). It returns {close, focus, term}.
export function openTerminal(el, sandboxId, { onStatus }) {
  loadCSS();
  const term = new Terminal({
    cursorBlink: true,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
    fontSize: 14,
    scrollback: 5000,
    screenReaderMode: false,
    theme: { background: "#0d1117" },
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(el);
  term.attachCustomKeyEventHandler((ev) => {
    if (ev.key === "F6" && ev.type === "keydown") {
      const next = el.closest("section")?.querySelector("[data-after-terminal]");
      next?.focus();
      return false;
    }
    return true;
  });
  try {
    fit.fit();
  } catch {
    // not laid out yet: the default size stands until the first resize
  }

  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${proto}//${location.host}/api/v1/sandboxes/${encodeURIComponent(sandboxId)}/terminal?rows=${term.rows}&cols=${term.cols}`;
  const protocols = [PROTOCOL];
  if (apiKey()) protocols.push("stacyvm.key." + base64url(apiKey()));
  onStatus("connecting");
  const ws = new WebSocket(url, protocols);
  ws.binaryType = "arraybuffer";
  const enc = new TextEncoder();
  let opened = false;
  let ended = false;

  ws.onopen = () => {
    opened = true;
    onStatus("open", `${term.cols}×${term.rows}`);
    term.focus();
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") {
      term.write(new Uint8Array(ev.data));
      return;
    }
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (msg.type === "exit") {
      ended = true;
      term.write(`\r\n\x1b[2m[session ended with exit code ${msg.exit_code}]\x1b[0m\r\n`);
      onStatus("exit", msg.exit_code);
    } else if (msg.type === "error") {
      if (msg.code !== "INVALID_ARGUMENT") ended = true;
      onStatus("error", msg);
    }
  };
  ws.onclose = (ev) => {
    if (ended) return;
    ended = true;
    // A refused handshake reaches a page only as close code 1006, without
    // the server's answer; the sandbox page checks state and capability
    // first, so this is rare.
    onStatus(opened ? "closed" : "error", opened ? ev.code : { message: `the server refused the terminal connection (close code ${ev.code}); the server log has the reason` });
  };

  const send = (data) => ws.readyState === WebSocket.OPEN && ws.send(data);
  term.onData((s) => send(enc.encode(s)));
  term.onBinary((s) => send(Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff)));
  term.onResize(({ rows, cols }) => {
    send(JSON.stringify({ type: "resize", rows, cols }));
    if (opened && !ended) onStatus("open", `${cols}×${rows}`);
  });
  const ro = new ResizeObserver(() => {
    try {
      fit.fit();
    } catch {
      // hidden
    }
  });
  ro.observe(el);

  return {
    term,
    focus: () => term.focus(),
    close() {
      ro.disconnect();
      ended = true;
      ws.close();
      term.dispose();
    },
  };
}
