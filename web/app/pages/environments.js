// Environments: specs (an owner's image recipe), builds with a live log,
// cancel, and spawning from a ready build.
import { api, errorFrom, apiKey } from "../api.js";
import { h, clear, errorBox, empty, code, notice, field, busy, fmtTime, kv, stateBadge } from "../ui.js";

const lines = (s) =>
  s
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);

export async function render(main, params, ctx) {
  if (params.build) return buildPage(main, params.build, ctx);
  const status = h("div", { "aria-live": "polite" });
  const specsSlot = h("div");
  const buildsSlot = h("div");
  main.append(
    h("h1", {}, "Environments"),
    h("p", { class: "muted" }, "A spec names a base image and the packages to add; a build turns it into an image through dockerd. Spawn sandboxes from a ready build."),
    specForm(() => load()),
    status,
    h("h2", {}, "Specs"),
    specsSlot,
    h("h2", {}, "Builds"),
    buildsSlot,
  );

  async function startBuild(spec, button) {
    await busy(button, async () => {
      try {
        const b = await api("POST", "/environments/builds", { json: { spec_id: spec.id } });
        notice(`Build ${b.id} queued.`);
        location.hash = `#/environments/builds/${encodeURIComponent(b.id)}`;
      } catch (e) {
        clear(status, errorBox(e, `Build ${spec.name}`));
      }
    });
  }

  async function load() {
    const [specs, builds] = await Promise.allSettled([api("GET", "/environments/specs", { signal: ctx.signal }), api("GET", "/environments/builds", { signal: ctx.signal })]);
    if (ctx.signal.aborted) return;
    if (specs.status === "rejected") clear(specsSlot, errorBox(specs.reason, "Specs"));
    else if (!specs.value.length) clear(specsSlot, empty("No environment specs yet.", "Create one with the form above: a base image and the Python or Debian packages to add."));
    else
      clear(
        specsSlot,
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["Name", "Base image", "Packages", "Owner", "Created", ""].map((c, i) => h("th", { scope: "col", class: i === 3 || i === 4 ? "hide-narrow" : "" }, c)))),
            h(
              "tbody",
              {},
              specs.value.map((s) => {
                const b = h("button", { type: "button", class: "primary" }, "Build");
                b.addEventListener("click", () => startBuild(s, b));
                return h(
                  "tr",
                  { "data-spec": s.id },
                  h("th", { scope: "row" }, s.name),
                  h("td", { class: "mono" }, s.base_image),
                  h("td", { class: "mono" }, [...(s.python_packages || []), ...(s.apt_packages || []).map((p) => `apt:${p}`)].join(" ") || "—", s.python_version ? h("div", { class: "muted" }, `Python ${s.python_version}`) : null),
                  h("td", { class: "hide-narrow" }, s.owner_id || "—"),
                  h("td", { class: "hide-narrow" }, fmtTime(s.created_at)),
                  h("td", { class: "actions" }, b),
                );
              }),
            ),
          ),
        ),
      );
    if (builds.status === "rejected") clear(buildsSlot, errorBox(builds.reason, "Builds"));
    else if (!builds.value.length) clear(buildsSlot, empty("No builds yet.", "Press “Build” on a spec."));
    else
      clear(
        buildsSlot,
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["Build", "Spec", "Status", "Image", "Created"].map((c, i) => h("th", { scope: "col", class: i === 4 ? "hide-narrow" : "" }, c)))),
            h(
              "tbody",
              {},
              builds.value.map(({ build: b, spec: s }) =>
                h(
                  "tr",
                  { "data-build": b.id },
                  h("td", {}, h("a", { class: "mono", href: `#/environments/builds/${encodeURIComponent(b.id)}` }, b.id)),
                  h("td", {}, s?.name || b.spec_id),
                  h("td", {}, stateBadge(b.status), b.reason ? h("div", { class: "bad", style: "font-size:.85rem" }, b.reason) : null),
                  h("td", { class: "mono" }, b.image || "—"),
                  h("td", { class: "hide-narrow" }, fmtTime(b.created_at)),
                ),
              ),
            ),
          ),
        ),
      );
  }
  await load();
}

function specForm(onCreated) {
  const name = h("input", { name: "name", required: true, spellcheck: false });
  const base = h("input", { name: "base_image", required: true, placeholder: "python:3.12-slim", spellcheck: false });
  const py = h("textarea", { name: "python_packages", rows: 3, placeholder: "requests==2.32.3\nnumpy" });
  const apt = h("textarea", { name: "apt_packages", rows: 3, placeholder: "git" });
  const pyver = h("input", { name: "python_version", placeholder: "image's", size: 8 });
  const owner = h("input", { name: "owner_id", placeholder: "none", size: 10 });
  const submit = h("button", { type: "submit", class: "primary" }, "Create spec");
  const msg = h("div", { "aria-live": "polite" });
  return h(
    "form",
    {
      class: "card",
      "aria-label": "New environment spec",
      onsubmit: (ev) => {
        ev.preventDefault();
        busy(submit, async () => {
          clear(msg);
          try {
            const s = await api("POST", "/environments/specs", {
              json: { name: name.value.trim(), base_image: base.value.trim(), python_packages: lines(py.value), apt_packages: lines(apt.value), python_version: pyver.value.trim() || undefined, owner_id: owner.value.trim() || undefined },
            });
            notice(`Created spec ${s.name}.`);
            onCreated();
          } catch (e) {
            msg.append(errorBox(e, "Create spec"));
          }
        });
      },
    },
    h("div", { class: "row" }, field("Name", name), h("div", { class: "field wide" }, h("label", { for: "env-base" }, "Base image"), Object.assign(base, { id: "env-base" })), field("Python version", pyver), field("Owner", owner)),
    h("div", { class: "row" }, h("div", { class: "field wide" }, h("label", { for: "env-py" }, "Python packages (one per line)"), Object.assign(py, { id: "env-py" })), h("div", { class: "field wide" }, h("label", { for: "env-apt" }, "Debian packages (one per line)"), Object.assign(apt, { id: "env-apt" }))),
    msg,
    h("div", { class: "row", style: "margin-top:.5rem" }, submit),
  );
}

// buildPage shows one build and follows its log live (NDJSON) until it
// ends; a finished build's log comes the same way, all at once.
async function buildPage(main, id, { signal }) {
  const path = `/environments/builds/${encodeURIComponent(id)}`;
  const status = h("div", { "aria-live": "polite" });
  const details = h("div", { class: "card" });
  const log = h("pre", { class: "log", tabindex: 0, "aria-label": "Build log" });
  const actions = h("div", { class: "row" });
  main.append(h("p", {}, h("a", { href: "#/environments" }, "← Environments")), h("h1", {}, "Build ", h("span", { class: "mono" }, id)), actions, status, details, h("h2", {}, "Log"), log);

  const show = (b) => {
    clear(
      details,
      kv([
        ["Status", stateBadge(b.status)],
        ["Reason", b.reason || undefined],
        ["Image", b.image ? h("span", { class: "mono" }, b.image) : null],
        ["Targets", (b.targets || []).join(", ")],
        ["Artifacts", (b.artifacts || []).length ? h("div", {}, b.artifacts.map((a) => h("div", { class: "mono" }, `${a.target}: ${a.ref}`))) : null],
        ["Attempts", String(b.attempts ?? "")],
        ["Created", fmtTime(b.created_at)],
        ["Finished", b.finished_at ? fmtTime(b.finished_at) : undefined],
      ]),
    );
    const done = ["ready", "failed", "canceled"].includes(b.status);
    const cancel = h("button", { type: "button", class: "danger", disabled: done }, "Cancel build");
    cancel.addEventListener("click", () =>
      busy(cancel, async () => {
        try {
          show(await api("POST", path + "/cancel"));
        } catch (e) {
          clear(status, errorBox(e, "Cancel"));
        }
      }),
    );
    const spawn = h("button", { type: "button", class: "primary", disabled: b.status !== "ready" }, "Spawn a sandbox");
    spawn.addEventListener("click", () =>
      busy(spawn, async () => {
        try {
          const cfg = await api("GET", path + "/spawn-config");
          const sb = await api("POST", "/sandboxes", { json: { image: cfg.image, provider: cfg.provider || undefined } });
          location.hash = `#/sandboxes/${encodeURIComponent(sb.id)}`;
        } catch (e) {
          clear(status, errorBox(e, "Spawn"));
        }
      }),
    );
    clear(actions, spawn, cancel);
  };

  let b;
  try {
    b = await api("GET", path, { signal });
  } catch (e) {
    if (e.name !== "AbortError") clear(status, errorBox(e));
    return;
  }
  show(b);

  // Follow: the NDJSON log replays what the build wrote, streams the rest
  // while it runs, and ends with the build's final status.
  try {
    const headers = apiKey() ? { "X-API-Key": apiKey() } : {};
    const res = await fetch(`/api/v1${path}/logs`, { headers, signal, cache: "no-store" });
    if (!res.ok) throw await errorFrom(res);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (!line.trim()) continue;
        const f = JSON.parse(line);
        if (f.data) log.append(f.data);
        else if (f.skipped) log.append(`\n[${f.skipped} bytes of output dropped]\n`);
        else if (f.type === "status") {
          log.append(`\n[build ${f.status}${f.reason ? ": " + f.reason : ""}]\n`);
        }
        log.scrollTop = log.scrollHeight;
      }
    }
    show(await api("GET", path, { signal }));
  } catch (e) {
    if (e.name !== "AbortError") status.append(errorBox(e, "Build log"));
  }
}
