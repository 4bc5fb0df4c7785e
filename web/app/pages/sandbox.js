// One sandbox: details, terminal, file browser, log, activity.
import { api, sandboxPath, followEvents } from "../api.js";
import { h, clear, errorBox, empty, code, stateBadge, relTime, fmtTime, fmtBytes, notice, confirmDialog, field, busy, kv } from "../ui.js";
import { eventRow } from "./overview.js";

const TABS = [
  ["terminal", "Terminal"],
  ["files", "Files"],
  ["log", "Log"],
  ["activity", "Activity"],
];

export async function render(main, params, ctx) {
  const id = params.id;
  const tab = params.tab || "terminal";
  let sb;
  try {
    sb = await api("GET", sandboxPath(id), { signal: ctx.signal });
  } catch (e) {
    if (e.name === "AbortError") return;
    main.append(h("h1", {}, "Sandbox ", h("span", { class: "mono" }, id)), errorBox(e), h("p", {}, h("a", { href: "#/sandboxes" }, "Back to the list of sandboxes")));
    return;
  }
  const live = sb.state !== "destroyed";
  const status = h("div", { "aria-live": "polite" });
  // Pause and resume, where the provider can (its pause capability).
  let canPause = false;
  if (sb.state === "running" || sb.state === "paused") {
    const p = await api("GET", `/providers/${encodeURIComponent(sb.provider)}`, { signal: ctx.signal }).catch(() => null);
    canPause = !!p?.capabilities?.pause;
  }
  const freeze = (op) => {
    const b = h("button", { type: "button" }, op === "pause" ? "Pause" : "Resume");
    b.addEventListener("click", () =>
      busy(b, async () => {
        try {
          await api("POST", sandboxPath(id) + "/" + op, { json: {} });
          notice(`${op === "pause" ? "Paused" : "Resumed"} ${id}.`);
          ctx.refresh();
        } catch (e) {
          clear(status, errorBox(e, op === "pause" ? "Pause" : "Resume"));
        }
      }),
    );
    return b;
  };
  const extend = h("button", { type: "button", disabled: !live }, "Extend 30m");
  const destroy = h("button", { type: "button", class: "danger", disabled: !live }, "Destroy");
  const expires = h("span", { title: fmtTime(sb.expires_at) }, live ? relTime(sb.expires_at) : "—");
  extend.addEventListener("click", () =>
    busy(extend, async () => {
      try {
        const out = await api("POST", sandboxPath(id) + "/extend", { json: { ttl: "30m" } });
        clear(expires, relTime(out.expires_at));
        expires.title = fmtTime(out.expires_at);
        notice(`${id} now expires ${relTime(out.expires_at)}.`);
      } catch (e) {
        clear(status, errorBox(e, "Extend"));
      }
    }),
  );
  destroy.addEventListener("click", async () => {
    if (!(await confirmDialog(`Destroy ${id}? Its files are lost.`, "Destroy"))) return;
    await busy(destroy, async () => {
      try {
        await api("DELETE", sandboxPath(id));
        notice(`Destroyed ${id}.`);
        location.hash = "#/sandboxes";
      } catch (e) {
        clear(status, errorBox(e, "Destroy"));
      }
    });
  });
  const meta = Object.entries(sb.metadata || {})
    .map(([k, v]) => `${k}=${v}`)
    .join(", ");
  main.append(
    h("p", {}, h("a", { href: "#/sandboxes" }, "← Sandboxes")),
    h("h1", {}, "Sandbox ", h("span", { class: "mono" }, id), " ", stateBadge(sb.state)),
    h("div", { class: "row" }, canPause && sb.state === "running" ? freeze("pause") : null, canPause && sb.state === "paused" ? freeze("resume") : null, extend, destroy),
    status,
    h(
      "div",
      { class: "card", style: "margin-top:.75rem" },
      kv([
        ["Provider", sb.provider],
        ["Image", h("span", { class: "mono" }, sb.image)],
        ["Template", sb.template],
        ["Owner", sb.owner_id],
        ["Memory · vCPUs", `${sb.memory_mb} MB · ${sb.vcpus}`],
        ["Created", fmtTime(sb.created_at)],
        ["Expires", expires],
        ["Idle timeout", sb.idle_timeout ? `${sb.idle_timeout} s, then ${sb.on_idle || "pause"}` : undefined],
        ["Preview domain", sb.preview_domain || undefined],
        ["Metadata", meta || undefined],
        ["Error", sb.error ? h("span", { class: "bad" }, sb.error) : undefined],
      ]),
    ),
    h(
      "nav",
      { class: "tabs", "aria-label": "Sandbox views" },
      TABS.map(([t, label]) => h("a", { href: `#/sandboxes/${encodeURIComponent(id)}/${t}`, "aria-current": t === tab ? "page" : false }, label)),
    ),
  );
  const section = h("section", { "aria-label": TABS.find(([t]) => t === tab)?.[1] });
  main.append(section);
  if (tab === "terminal") return terminalTab(section, sb, ctx);
  if (tab === "files") return filesTab(section, sb, params);
  if (tab === "log") return logTab(section, sb);
  return activityTab(section, sb, ctx);
}

async function terminalTab(section, sb, ctx) {
  if (sb.state === "paused") {
    section.append(empty("The sandbox is paused: its processes are frozen.", "Resume it (the button above) to open a terminal."));
    return;
  }
  if (sb.state !== "running") {
    section.append(empty(`The sandbox is ${sb.state}: a terminal needs a running sandbox.`, h("a", { href: "#/sandboxes" }, "Spawn a new one"), "."));
    return;
  }
  // A refused WebSocket handshake tells the page nothing, so what can be
  // checked in advance is: the provider must offer terminals.
  try {
    const p = await api("GET", `/providers/${encodeURIComponent(sb.provider)}`, { signal: ctx.signal });
    if (!p.capabilities?.terminal) {
      section.append(empty(`The ${sb.provider} provider has no interactive terminals.`, "Run commands with ", code(`stacyvm exec ${sb.id} -- …`), " instead."));
      return;
    }
  } catch (e) {
    if (e.name === "AbortError") return;
    section.append(errorBox(e, "Provider"));
  }
  const state = h("span", { class: "muted", "aria-live": "polite" });
  const reconnect = h("button", { type: "button", hidden: true }, "Reconnect");
  const problem = h("div");
  const box = h("div", { class: "terminal-wrap", "data-terminal": "" });
  const after = h("button", { type: "button", "data-after-terminal": "", class: "link" }, "Focus the terminal");
  section.append(
    h("div", { class: "term-status" }, h("strong", {}, "Shell"), state, reconnect, h("span", { class: "muted" }, "F6 leaves the terminal; every other key goes to the shell.")),
    problem,
    box,
    h("p", {}, after),
  );
  const { openTerminal } = await import("../terminal.js");
  let t;
  const connect = () => {
    t?.close();
    clear(box);
    clear(problem);
    reconnect.hidden = true;
    t = openTerminal(box, sb.id, {
      onStatus: (s, detail) => {
        box.dataset.status = s;
        if (s === "connecting") clear(state, "connecting…");
        else if (s === "open") clear(state, `connected · ${detail}`);
        else {
          reconnect.hidden = false;
          if (s === "exit") clear(state, `session ended (exit code ${detail})`);
          else if (s === "closed") clear(state, `disconnected (code ${detail})`);
          else {
            clear(state, "failed");
            clear(problem, errorBox(detail, "Terminal"));
            // A refused handshake carries no message to the page; the
            // sandbox itself usually says why (gone, no longer running).
            if (!detail?.code)
              api("GET", sandboxPath(sb.id))
                .then((now) => now.state !== "running" && clear(problem, errorBox({ message: `the sandbox is ${now.state}${now.error ? ": " + now.error : ""}` }, "Terminal")))
                .catch((e) => clear(problem, errorBox(e, "Terminal")));
          }
        }
      },
    });
  };
  reconnect.addEventListener("click", connect);
  after.addEventListener("click", () => t?.focus());
  ctx.onLeave(() => t?.close());
  connect();
}

function joinPath(dir, name) {
  return (dir.endsWith("/") ? dir : dir + "/") + name;
}

function parentOf(p) {
  const i = p.replace(/\/+$/, "").lastIndexOf("/");
  return i <= 0 ? "/" : p.slice(0, i);
}

async function filesTab(section, sb, params) {
  const dir = params.path || "/workspace";
  const base = `#/sandboxes/${encodeURIComponent(sb.id)}/files`;
  const go = (p) => `${base}?path=${encodeURIComponent(p)}`;
  const status = h("div", { "aria-live": "polite" });
  const editor = h("div");
  const listing = h("div");
  const pathInput = h("input", { name: "path", value: dir, class: "mono", spellcheck: false, style: "flex:1 1 16rem" });
  const upload = h("input", { type: "file", multiple: true, id: "upload-input" });
  const uploadBtn = h("button", { type: "submit" }, "Upload");
  const newName = h("input", { name: "new-file", placeholder: "new-file.txt", class: "mono", size: 14, spellcheck: false });

  const crumbs = h("nav", { class: "crumbs", "aria-label": "Path" });
  const parts = dir.split("/").filter(Boolean);
  crumbs.append(h("a", { href: go("/") }, "/"));
  parts.forEach((p, i) => crumbs.append(h("a", { href: go("/" + parts.slice(0, i + 1).join("/")) }, p), i < parts.length - 1 ? "/" : ""));

  const live = sb.state !== "destroyed";
  section.append(
    h(
      "form",
      {
        class: "row card",
        "aria-label": "Go to a directory",
        onsubmit: (ev) => {
          ev.preventDefault();
          location.hash = go(pathInput.value.trim() || "/");
        },
      },
      h("label", { for: "files-path", class: "muted" }, "Directory"),
      Object.assign(pathInput, { id: "files-path" }),
      h("button", { type: "submit" }, "Open"),
      dir !== "/" ? h("a", { class: "button", href: go(parentOf(dir)) }, "Up") : null,
    ),
    crumbs,
    live
      ? h(
          "div",
          { class: "row card", style: "margin-top:.5rem" },
          h(
            "form",
            {
              class: "row",
              "aria-label": "Upload files",
              onsubmit: (ev) => {
                ev.preventDefault();
                if (!upload.files.length) {
                  clear(status, errorBox({ message: "choose one or more files first" }, "Upload"));
                  return;
                }
                busy(uploadBtn, async () => {
                  clear(status);
                  for (const f of upload.files) {
                    try {
                      await api("PUT", sandboxPath(sb.id) + "/files/raw", { query: { path: joinPath(dir, f.name) }, body: f, headers: { "Content-Type": "application/octet-stream" } });
                    } catch (e) {
                      status.append(errorBox(e, `Upload ${f.name}`));
                    }
                  }
                  notice(`Uploaded ${upload.files.length} file${upload.files.length > 1 ? "s" : ""} to ${dir}.`);
                  upload.value = "";
                  loadListing();
                });
              },
            },
            h("label", { for: "upload-input" }, "Upload to this directory"),
            upload,
            uploadBtn,
          ),
          h(
            "form",
            {
              class: "row",
              "aria-label": "New file",
              onsubmit: (ev) => {
                ev.preventDefault();
                const name = newName.value.trim();
                if (!name) return;
                openEditor(name.startsWith("/") ? name : joinPath(dir, name), "");
              },
            },
            h("label", { for: "new-file" }, "New file"),
            Object.assign(newName, { id: "new-file" }),
            h("button", { type: "submit" }, "Create"),
          ),
        )
      : null,
    status,
    editor,
    listing,
  );

  async function download(path) {
    try {
      const res = await api("GET", sandboxPath(sb.id) + "/files", { query: { path }, raw: true });
      const url = URL.createObjectURL(await res.blob());
      const a = h("a", { href: url, download: path.split("/").pop() });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      clear(status, errorBox(e, `Download ${path}`));
    }
  }

  async function edit(path) {
    try {
      const res = await api("GET", sandboxPath(sb.id) + "/files", { query: { path }, raw: true });
      openEditor(path, await res.text());
    } catch (e) {
      clear(status, errorBox(e, `Open ${path}`));
    }
  }

  function openEditor(path, text) {
    const area = h("textarea", { id: "editor-text", spellcheck: false, value: text, rows: 18 });
    const save = h("button", { type: "submit", class: "primary" }, "Save");
    const msg = h("div", { "aria-live": "polite" });
    clear(
      editor,
      h(
        "form",
        {
          class: "card editor",
          "aria-label": `Edit ${path}`,
          onsubmit: (ev) => {
            ev.preventDefault();
            busy(save, async () => {
              clear(msg);
              try {
                await api("POST", sandboxPath(sb.id) + "/files", { json: { path, content: area.value } });
                notice(`Saved ${path}.`);
                clear(editor);
                loadListing();
              } catch (e) {
                msg.append(errorBox(e, `Save ${path}`));
              }
            });
          },
        },
        h("h2", { style: "margin-top:0" }, "Editing ", h("span", { class: "mono" }, path)),
        h("label", { for: "editor-text", class: "muted" }, "Contents (UTF-8 text)"),
        area,
        msg,
        h("div", { class: "row", style: "margin-top:.5rem" }, save, h("button", { type: "button", onclick: () => clear(editor) }, "Cancel")),
      ),
    );
    area.focus();
  }

  async function remove(fi) {
    if (!(await confirmDialog(`Delete ${fi.path}${fi.is_dir ? " and everything in it" : ""}?`, "Delete"))) return;
    try {
      await api("DELETE", sandboxPath(sb.id) + "/files", { query: { path: fi.path, recursive: fi.is_dir ? "true" : undefined } });
      notice(`Deleted ${fi.path}.`);
      loadListing();
    } catch (e) {
      clear(status, errorBox(e, `Delete ${fi.path}`));
    }
  }

  async function loadListing() {
    let list;
    try {
      list = await api("GET", sandboxPath(sb.id) + "/files/list", { query: { path: dir } });
    } catch (e) {
      clear(listing, errorBox(e, `List ${dir}`));
      return;
    }
    list.sort((a, b) => b.is_dir - a.is_dir || a.path.localeCompare(b.path));
    if (!list.length) {
      clear(listing, empty(`${dir} is empty.`, live ? "Upload a file or create one above." : ""));
      return;
    }
    clear(
      listing,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { "aria-label": `Files in ${dir}` },
          h("thead", {}, h("tr", {}, ["Name", "Size", "Mode", "Modified", "Actions"].map((c, i) => h("th", { scope: "col", class: i === 2 || i === 3 ? "hide-narrow" : "" }, c)))),
          h(
            "tbody",
            {},
            list.map((fi) => {
              const name = fi.path.split("/").pop();
              return h(
                "tr",
                { "data-path": fi.path },
                h("td", { class: "mono" }, fi.is_dir ? h("a", { href: go(fi.path) }, name + "/") : name, fi.is_symlink ? h("span", { class: "muted" }, " (link)") : null),
                h("td", {}, fi.is_dir ? "—" : fmtBytes(fi.size)),
                h("td", { class: "mono hide-narrow" }, fi.mode),
                h("td", { class: "hide-narrow" }, fmtTime(fi.mod_time)),
                h(
                  "td",
                  { class: "actions" },
                  fi.is_dir
                    ? null
                    : [
                        h("button", { type: "button", onclick: () => download(fi.path), "aria-label": `Download ${name}` }, "Download"),
                        " ",
                        live ? h("button", { type: "button", onclick: () => edit(fi.path), "aria-label": `Edit ${name}` }, "Edit") : null,
                        " ",
                      ],
                  live ? h("button", { type: "button", class: "danger", onclick: () => remove(fi), "aria-label": `Delete ${name}` }, "Delete") : null,
                ),
              );
            }),
          ),
        ),
      ),
    );
  }
  await loadListing();
}

async function logTab(section, sb) {
  const out = h("pre", { class: "log", tabindex: 0, "aria-label": "Sandbox log" });
  const lines = h("select", { id: "log-lines" }, [100, 500, 2000].map((n) => h("option", { value: n }, n)));
  const refresh = h("button", { type: "button" }, "Refresh");
  const status = h("div");
  section.append(h("div", { class: "row", style: "margin-bottom:.5rem" }, field("Last lines", lines), refresh), status, out);
  const load = () =>
    busy(refresh, async () => {
      clear(status);
      try {
        const list = await api("GET", sandboxPath(sb.id) + "/logs", { query: { lines: lines.value } });
        if (!list.length) clear(out, "(the log is empty: the sandbox's main process has written nothing yet)");
        else clear(out, list.join("\n"));
      } catch (e) {
        clear(out);
        status.append(errorBox(e, "Log"));
      }
    });
  refresh.addEventListener("click", load);
  lines.addEventListener("change", load);
  await load();
}

// activityTab shows the sandbox's events as far as the server's event
// history reaches, then live: state changes, extensions, and each
// finished command with its exit code and duration (the API keeps no
// other exec history).
function activityTab(section, sb, { signal }) {
  const list = h("ol", { class: "events", role: "log", "aria-label": "Sandbox events" });
  const placeholder = h("li", { class: "muted" }, "No events for this sandbox in the server's history yet. Commands you run (exec, not the terminal) appear here with their exit codes.");
  list.append(placeholder);
  section.append(h("p", { class: "muted" }, "State changes and finished commands (exit code, duration), newest first."), h("div", { class: "card" }, list));
  followEvents({
    after: 0,
    signal,
    onEvent: (e) => {
      if (e.sandbox_id !== sb.id) return;
      placeholder.remove();
      list.prepend(eventRow(e));
    },
  });
}
