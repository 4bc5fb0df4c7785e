// The API client of the dashboard: every request goes to /api/v1 on the
// server that served the page, with the API key from session storage.
// Failures become ApiError with the server's own message.

const KEY = "stacyvm.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.code = body.code || "";
    this.hint = body.hint || "";
    this.requestId = body.request_id || "";
  }
}

// A 401 anywhere means the key is missing or wrong: the app listens and
// asks for one.
function unauthorized(err) {
  window.dispatchEvent(new CustomEvent("stacyvm:unauthorized", { detail: err }));
}

export async function errorFrom(res) {
  let body;
  try {
    body = await res.json();
  } catch {
    body = { message: `${res.status} ${res.statusText || "error"} (the answer was not the API's JSON error body)` };
  }
  const err = new ApiError(res.status, body);
  if (res.status === 401) unauthorized(err);
  return err;
}

// api calls method path (relative to /api/v1). json is sent as an
// application/json body (the server refuses other types for JSON routes);
// body is sent as it is, with the headers given.
export async function api(method, path, { json, body, headers, query, raw, signal } = {}) {
  const h = new Headers(headers || {});
  const key = apiKey();
  if (key) h.set("X-API-Key", key);
  let b = body;
  if (json !== undefined) {
    h.set("Content-Type", "application/json");
    b = JSON.stringify(json);
  }
  let url = "/api/v1" + path;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
    const s = q.toString();
    if (s) url += (url.includes("?") ? "&" : "?") + s;
  }
  let res;
  try {
    res = await fetch(url, { method, headers: h, body: b, cache: "no-store", signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, { code: "NETWORK", message: `cannot reach the server: ${e.message}` });
  }
  if (!res.ok) throw await errorFrom(res);
  if (raw) return res;
  const ct = res.headers.get("Content-Type") || "";
  return ct.includes("json") ? res.json() : res.text();
}

export const sandboxPath = (id) => "/sandboxes/" + encodeURIComponent(id);

// streamEvents reads the server-sent event stream with fetch, since
// EventSource cannot send the API key. It calls onEvent for each event
// and resolves when the stream ends; the caller reconnects with the last
// id it saw.
export async function streamEvents({ after, signal, onOpen, onEvent }) {
  const headers = {};
  if (after !== undefined && after !== null) headers["Last-Event-ID"] = String(after);
  const res = await api("GET", "/events", { raw: true, headers, signal });
  onOpen?.();
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = block
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trimStart())
        .join("\n");
      if (data) {
        try {
          onEvent(JSON.parse(data));
        } catch {
          // not an event: ignore
        }
      }
    }
  }
}

// followEvents keeps an event stream open until signal aborts,
// reconnecting after a drop from the last event seen.
export function followEvents({ after, signal, onEvent, onState }) {
  let last = after;
  (async () => {
    let delay = 500;
    while (!signal.aborted) {
      try {
        await streamEvents({
          after: last,
          signal,
          onOpen: () => {
            delay = 500;
            onState?.("live");
          },
          onEvent: (e) => {
            last = e.id;
            onEvent(e);
          },
        });
        if (signal.aborted) return;
        onState?.("reconnecting");
      } catch (e) {
        if (signal.aborted) return;
        onState?.("error", e);
        if (e.status === 401) return;
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
}
