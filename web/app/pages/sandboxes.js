// Sandboxes: list with filters, spawn from an image or a template,
// extend, destroy, bulk destroy.
import { api, sandboxPath } from "../api.js";
import { h, clear, errorBox, empty, code, stateBadge, relTime, fmtTime, notice, confirmDialog, field, busy } from "../ui.js";

const STATES = ["creating", "pooled", "running", "pausing", "paused", "resuming", "stopped", "error", "destroying", "destroyed"];
const PAGE = 100;

export async function render(main, params, { signal }) {
  const [providers, templates] = await Promise.all([
    api("GET", "/providers", { signal }).catch(() => []),
    api("GET", "/templates", { signal }).catch(() => []),
  ]);
  if (signal.aborted) return;
  main.append(h("h1", {}, "Sandboxes"), spawnForm(providers, templates), h("h2", {}, "All sandboxes"));

  // Filters live in the location (#/sandboxes?state=running) so that a
  // filtered list can be bookmarked and the back button works.
  const state = h("select", { name: "state" }, h("option", { value: "" }, "any state (but destroyed)"), STATES.map((s) => h("option", { value: s, selected: params.state === s }, s)));
  const prov = h("select", { name: "provider" }, h("option", { value: "" }, "any provider"), providers.map((p) => h("option", { value: p.name, selected: params.provider === p.name }, p.name)));
  const owner = h("input", { name: "owner_id", value: params.owner_id || "", placeholder: "any owner" });
  const filters = h(
    "form",
    {
      class: "inline card",
      role: "search",
      "aria-label": "Filter sandboxes",
      onsubmit: (ev) => {
        ev.preventDefault();
        const q = new URLSearchParams();
        if (state.value) q.set("state", state.value);
        if (prov.value) q.set("provider", prov.value);
        if (owner.value.trim()) q.set("owner_id", owner.value.trim());
        const s = q.toString();
        location.hash = "#/sandboxes" + (s ? "?" + s : "");
      },
    },
    field("State", state),
    field("Provider", prov),
    field("Owner", owner),
    h("button", { type: "submit" }, "Filter"),
  );
  const status = h("div", { "aria-live": "polite" });
  const bulk = h("button", { type: "button", class: "danger", disabled: true }, "Destroy selected");
  const all = h("input", { type: "checkbox", "aria-label": "Select all" });
  const tbody = h("tbody");
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const table = h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, all),
          ["ID", "State", "Provider", "Image / template", "Owner", "Expires", "Actions"].map((c, i) => h("th", { scope: "col", class: i === 4 ? "hide-narrow" : "" }, c)),
        ),
      ),
      tbody,
    ),
  );
  const refresh = h("button", { type: "button" }, "Refresh");
  main.append(filters, h("div", { class: "row", style: "margin-bottom:.5rem" }, bulk, refresh), status, table, h("p", {}, more));

  const selected = () => [...tbody.querySelectorAll("input[type=checkbox]:checked")].map((c) => c.value);
  const updateBulk = () => {
    const n = selected().length;
    bulk.disabled = n === 0;
    bulk.textContent = n ? `Destroy selected (${n})` : "Destroy selected";
  };
  all.addEventListener("change", () => {
    tbody.querySelectorAll("input[type=checkbox]").forEach((c) => (c.checked = all.checked));
    updateBulk();
  });
  bulk.addEventListener("click", async () => {
    const ids = selected();
    if (!ids.length || !(await confirmDialog(`Destroy ${ids.length} sandbox${ids.length > 1 ? "es" : ""}? Their files are lost.`, "Destroy"))) return;
    await busy(bulk, async () => {
      const results = await Promise.allSettled(ids.map((id) => api("DELETE", sandboxPath(id))));
      const failed = results.map((r, i) => [r, ids[i]]).filter(([r]) => r.status === "rejected");
      clear(status, failed.map(([r, id]) => errorBox(r.reason, `Destroy ${id}`)));
      notice(`Destroyed ${ids.length - failed.length} of ${ids.length}.`, failed.length ? "bad" : "ok");
    });
    load(true);
  });

  let cursor = "";
  async function load(reset) {
    if (reset) cursor = "";
    let res;
    try {
      res = await api("GET", "/sandboxes", { raw: true, signal, query: { state: params.state, provider: params.provider, owner_id: params.owner_id, limit: PAGE, cursor } });
    } catch (e) {
      if (e.name !== "AbortError") clear(status, errorBox(e, "Listing sandboxes"));
      return;
    }
    const list = await res.json();
    cursor = res.headers.get("X-Next-Cursor") || "";
    more.hidden = !cursor;
    if (reset) {
      tbody.replaceChildren();
      all.checked = false;
    }
    for (const sb of list) tbody.append(row(sb, () => load(true), status, updateBulk));
    if (reset && !list.length) {
      const filtered = params.state || params.provider || params.owner_id;
      tbody.append(
        h(
          "tr",
          {},
          h(
            "td",
            { colspan: 8 },
            filtered
              ? empty("No sandboxes match these filters.", h("a", { href: "#/sandboxes" }, "Clear the filters"), " or spawn one above.")
              : empty("No sandboxes yet.", "Spawn one with the form above, or from the command line: ", code("stacyvm spawn --image alpine")),
          ),
        ),
      );
    }
    updateBulk();
  }
  more.addEventListener("click", () => busy(more, () => load(false)));
  refresh.addEventListener("click", () => busy(refresh, () => load(true)));
  await load(true);
}

function row(sb, reload, status, onSelect) {
  const check = h("input", { type: "checkbox", value: sb.id, "aria-label": `Select ${sb.id}`, onchange: onSelect, disabled: sb.state === "destroyed" });
  const extend = h("button", { type: "button", disabled: sb.state === "destroyed" }, "Extend 30m");
  const destroy = h("button", { type: "button", class: "danger", disabled: sb.state === "destroyed" }, "Destroy");
  extend.addEventListener("click", () =>
    busy(extend, async () => {
      try {
        const out = await api("POST", sandboxPath(sb.id) + "/extend", { json: { ttl: "30m" } });
        notice(`${sb.id} now expires ${relTime(out.expires_at)}.`);
        reload();
      } catch (e) {
        clear(status, errorBox(e, `Extend ${sb.id}`));
      }
    }),
  );
  destroy.addEventListener("click", async () => {
    if (!(await confirmDialog(`Destroy ${sb.id}? Its files are lost.`, "Destroy"))) return;
    await busy(destroy, async () => {
      try {
        await api("DELETE", sandboxPath(sb.id));
        notice(`Destroyed ${sb.id}.`);
        reload();
      } catch (e) {
        clear(status, errorBox(e, `Destroy ${sb.id}`));
      }
    });
  });
  return h(
    "tr",
    { "data-id": sb.id, "data-expires": sb.expires_at },
    h("td", {}, check),
    h("td", {}, h("a", { href: `#/sandboxes/${encodeURIComponent(sb.id)}`, class: "mono" }, sb.id)),
    h("td", {}, stateBadge(sb.state), sb.error ? h("div", { class: "bad", style: "font-size:.85rem" }, sb.error) : null),
    h("td", {}, sb.provider),
    h("td", { class: "mono" }, sb.template ? `template ${sb.template}` : sb.image),
    h("td", { class: "hide-narrow" }, sb.owner_id || "—"),
    h("td", { title: fmtTime(sb.expires_at) }, sb.state === "destroyed" ? "—" : relTime(sb.expires_at)),
    h("td", { class: "actions" }, extend, " ", destroy),
  );
}

// spawnForm spawns from an image or a template (POST /sandboxes) and
// opens the new sandbox.
function spawnForm(providers, templates) {
  const from = h("select", { name: "from" }, h("option", { value: "" }, "an image"), templates.map((t) => h("option", { value: t.name }, `template ${t.name}`)));
  const image = h("input", { name: "image", placeholder: "server default", spellcheck: false });
  const prov = h("select", { name: "provider" }, h("option", { value: "" }, "default"), providers.filter((p) => p.healthy).map((p) => h("option", { value: p.name }, `${p.name} (${p.capabilities?.isolation})`)));
  const ttl = h("input", { name: "ttl", placeholder: "server default", size: 8 });
  const mem = h("input", { name: "memory_mb", type: "number", min: 0, placeholder: "default", style: "width:7rem" });
  const owner = h("input", { name: "owner_id", placeholder: "none", size: 10 });
  const idle = h("input", { name: "idle_timeout", type: "number", min: 0, placeholder: "none", style: "width:7rem" });
  const onIdle = h("select", { name: "on_idle" }, h("option", { value: "" }, "server default"), h("option", { value: "pause" }, "pause"), h("option", { value: "destroy" }, "destroy"));
  const submit = h("button", { type: "submit", class: "primary" }, "Spawn");
  const status = h("div", { "aria-live": "polite" });
  const imageField = field("Image", image, "e.g. alpine, python:3");
  from.addEventListener("change", () => (imageField.hidden = from.value !== ""));
  const form = h(
    "form",
    {
      class: "inline card",
      "aria-label": "Spawn a sandbox",
      onsubmit: (ev) => {
        ev.preventDefault();
        busy(submit, async () => {
          clear(status);
          const body = {
            provider: prov.value || undefined,
            ttl: ttl.value.trim() || undefined,
            owner_id: owner.value.trim() || undefined,
            idle_timeout: Number(idle.value) || undefined,
            on_idle: onIdle.value || undefined,
          };
          try {
            const sb = await api("POST", "/sandboxes", {
              json: from.value ? { ...body, template: from.value } : { ...body, image: image.value.trim() || undefined, memory_mb: Number(mem.value) || undefined },
            });
            notice(`Spawned ${sb.id}.`);
            location.hash = `#/sandboxes/${encodeURIComponent(sb.id)}`;
          } catch (e) {
            status.append(errorBox(e, "Spawn"));
          }
        });
      },
    },
    field("Spawn from", from),
    imageField,
    field("Provider", prov),
    field("TTL", ttl, "e.g. 30m, 2h"),
    field("Memory (MB)", mem),
    field("Owner", owner),
    field("Idle timeout (s)", idle),
    field("When idle", onIdle),
    submit,
  );
  return h("div", {}, form, status);
}
