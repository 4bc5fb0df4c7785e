// Overview: health, providers and their isolation, counts, live events.
import { api, followEvents } from "../api.js";
import { h, clear, errorBox, empty, code } from "../ui.js";

export async function render(main, _params, { signal }) {
  const health = h("div", { class: "grid" });
  const providers = h("div");
  const events = h("ol", { class: "events", role: "log", "aria-label": "Live events", "aria-live": "off" });
  const liveState = h("span", { class: "muted" }, "connecting…");
  main.append(
    h("h1", {}, "Overview"),
    health,
    h("h2", {}, "Providers"),
    providers,
    h("h2", {}, "Live events ", liveState),
    h("div", { class: "card" }, events),
  );

  const [hres, mres, pres] = await Promise.allSettled([
    api("GET", "/health", { signal }),
    api("GET", "/metrics", { signal }),
    api("GET", "/providers", { signal }),
  ]);
  if (signal.aborted) return;

  const stat = (label, value, cls) => h("div", { class: "card" }, h("div", { class: `stat ${cls || ""}` }, value), h("div", { class: "stat-label" }, label));
  if (hres.status === "fulfilled") {
    const v = hres.value;
    health.append(stat("Server", v.status, v.status === "ok" ? "ok" : "bad"), stat("Version · uptime", h("span", { class: "mono", style: "font-size:1rem" }, `${v.version} · ${v.uptime}`)));
  } else health.append(errorBox(hres.reason, "Health"));
  if (mres.status === "fulfilled") {
    const m = mres.value;
    const byState = Object.entries(m.sandboxes_by_state || {})
      .map(([s, n]) => `${n} ${s}`)
      .join(", ");
    health.append(
      stat("Active sandboxes", h("a", { href: "#/sandboxes?state=running" }, m.sandboxes_active)),
      stat("Spawns · execs", `${m.spawns_total} · ${m.execs_total}`),
      h("div", { class: "card" }, h("div", { class: "stat-label" }, "Sandboxes by state"), h("div", {}, byState || "none yet")),
    );
  } else health.append(errorBox(mres.reason, "Metrics"));

  if (pres.status === "fulfilled") {
    const list = pres.value;
    if (!list.length) {
      providers.append(empty("No providers are configured.", "Set ", code("provider.enabled"), " in the configuration and run ", code("stacyvm doctor"), "."));
    } else {
      providers.append(
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["Provider", "Status", "Isolation", "Terminal", "Notes"].map((c) => h("th", { scope: "col" }, c)))),
            h(
              "tbody",
              {},
              list.map((p) =>
                h(
                  "tr",
                  {},
                  h("th", { scope: "row" }, p.name, p.default ? h("span", { class: "badge", style: "margin-left:.4rem" }, "default") : null),
                  h("td", { class: p.healthy ? "ok" : "bad" }, p.healthy ? "healthy" : "unavailable"),
                  // An unavailable provider's capabilities are unknown.
                  h("td", {}, p.healthy || p.capabilities?.isolation !== "none" ? p.capabilities?.isolation || "—" : "—"),
                  h("td", {}, p.healthy ? (p.capabilities?.terminal ? "yes" : "no") : "—"),
                  h("td", {}, p.problem || ""),
                ),
              ),
            ),
          ),
        ),
      );
    }
  } else providers.append(errorBox(pres.reason, "Providers"));

  // The kept history first (after id 0), then live events; newest on top.
  const placeholder = h("li", { class: "muted" }, "No events yet. Spawn a sandbox on the Sandboxes page and its events appear here.");
  events.append(placeholder);
  const max = 100;
  followEvents({
    after: 0,
    signal,
    onState: (s, err) => {
      clear(liveState, s === "live" ? "● live" : s === "error" ? `(disconnected: ${err?.message || err}; retrying)` : "(reconnecting…)");
      liveState.className = s === "live" ? "ok" : "muted";
    },
    onEvent: (e) => {
      placeholder.remove();
      events.prepend(eventRow(e));
      while (events.children.length > max) events.lastChild.remove();
    },
  });
}

export function eventRow(e) {
  const t = new Date(e.time);
  const data = Object.entries(e.data || {})
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
  return h(
    "li",
    {},
    h("time", { datetime: e.time, class: "muted" }, isNaN(t) ? e.time : t.toLocaleTimeString()),
    h("span", { class: "mono" }, e.type),
    h("span", {}, e.sandbox_id ? h("a", { href: `#/sandboxes/${encodeURIComponent(e.sandbox_id)}`, class: "mono" }, e.sandbox_id) : null, " ", h("span", { class: "muted" }, data)),
  );
}
