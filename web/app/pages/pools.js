// Pools: the warm pools' status (GET /api/v1/pool/status): the summary,
// then one row per pool with its fill and its problem, if any.
import { api } from "../api.js";
import { h, errorBox, kv, empty, code } from "../ui.js";

// render shows the status and refreshes it every 2 seconds while the page
// is open: pools fill and drain on their own.
export async function render(main, _params, { signal }) {
  main.append(h("h1", {}, "Pools"), h("p", { class: "muted" }, "Refreshed every 2 seconds."));
  const body = h("div");
  main.append(body);
  const load = async () => {
    const next = h("div");
    try {
      fill(next, await api("GET", "/pool/status", { signal }));
    } catch (e) {
      if (e.name === "AbortError" || signal.aborted) return;
      next.append(errorBox(e, "Pool status"));
    }
    if (!signal.aborted) body.replaceChildren(...next.childNodes);
  };
  await load();
  (async () => {
    while (!signal.aborted) {
      await new Promise((r) => setTimeout(r, 2000));
      if (!signal.aborted) await load();
    }
  })();
}

function fill(main, st) {
  const { pools, ...summary } = st;
  main.append(
    h(
      "div",
      { class: "card" },
      kv([
        ["Enabled", summary.enabled ? "yes" : "no"],
        ["Ready members", String(summary.vms ?? "—")],
        ["Target (all pools)", String(summary.max_vms ?? "—")],
        ["Claims since start", String(summary.total_users ?? "—")],
      ]),
    ),
  );
  if (!Array.isArray(pools) || !pools.length) {
    main.append(
      empty(
        "No warm pools.",
        "Give a template a pool size on the Templates page, or declare ",
        code("pools:"),
        " in the configuration; a spawn that matches a pool then claims a ready sandbox instead of creating one.",
      ),
    );
    return;
  }
  const cols = ["Pool", "Image / template", "Provider", "Policy", "Ready / target", "Creating", "Claimed", "Misses", "Failures", "Problem"];
  main.append(
    h("h2", {}, "Warm pools"),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          pools.map((p) =>
            h(
              "tr",
              { "data-pool": p.name },
              h("th", { scope: "row" }, p.name),
              h("td", { class: "mono" }, p.template ? `template ${p.template}` : p.image || "—"),
              h("td", {}, p.provider || "default"),
              h("td", {}, p.policy || "—"),
              h("td", { class: p.ready < p.target ? "bad" : "ok" }, `${p.ready ?? "—"} / ${p.target ?? "—"}`),
              h("td", {}, String(p.creating ?? "—")),
              h("td", {}, String(p.claimed ?? "—")),
              h("td", {}, String(p.misses ?? "—")),
              h("td", {}, String(p.failures ?? "—")),
              h("td", { class: p.problem ? "bad" : "" }, p.problem || "—"),
            ),
          ),
        ),
      ),
    ),
  );
}
