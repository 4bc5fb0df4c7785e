// Pools: the server's warm pool status (GET /api/v1/pool/status), shown
// as the server reports it.
import { api } from "../api.js";
import { h, errorBox, kv } from "../ui.js";

function value(v) {
  if (v === null || v === undefined) return "—";
  if (Array.isArray(v)) return v.length ? h("div", {}, v.map((x) => h("div", { class: "card" }, typeof x === "object" ? table(x) : String(x)))) : "none";
  if (typeof v === "object") return table(v);
  return String(v);
}

function table(obj) {
  return kv(Object.entries(obj).map(([k, v]) => [k.replace(/_/g, " "), value(v)]));
}

export async function render(main, _params, { signal }) {
  main.append(h("h1", {}, "Pools"));
  try {
    const st = await api("GET", "/pool/status", { signal });
    main.append(h("div", { class: "card" }, table(st)));
    main.append(h("p", { class: "muted" }, "Warm pools keep sandboxes ready so that a spawn claims one instead of creating it; configure them with a template's pool size (Templates page) or the server configuration."));
  } catch (e) {
    if (e.name !== "AbortError") main.append(errorBox(e, "Pool status"));
  }
}
