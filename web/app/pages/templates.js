// Templates: list, create, edit, delete, spawn.
import { api } from "../api.js";
import { h, clear, errorBox, empty, code, notice, confirmDialog, field, busy } from "../ui.js";

const tplPath = (name) => "/templates/" + encodeURIComponent(name);

export async function render(main, _params, { signal }) {
  const status = h("div", { "aria-live": "polite" });
  const formSlot = h("div");
  const listSlot = h("div");
  const add = h("button", { type: "button", class: "primary", onclick: () => showForm(null) }, "New template");
  main.append(h("h1", {}, "Templates"), h("p", { class: "muted" }, "A template is a named image with setup commands, environment and limits; spawning from it runs the setup in a fresh sandbox."), h("div", { class: "row" }, add), status, formSlot, listSlot);

  const providers = await api("GET", "/providers", { signal }).catch(() => []);

  function showForm(t) {
    const name = h("input", { name: "name", required: true, value: t?.name || "", disabled: !!t, spellcheck: false });
    const image = h("input", { name: "image", value: t?.image || "", placeholder: "server default", spellcheck: false });
    const desc = h("input", { name: "description", value: t?.description || "" });
    const envRef = h("input", { name: "environment", value: t?.environment || "", placeholder: "none", spellcheck: false, class: "mono" });
    const setup = h("textarea", { name: "setup", rows: 4, value: (t?.setup || []).join("\n"), placeholder: "pip install requests" });
    const env = h("textarea", {
      name: "env",
      rows: 3,
      value: Object.entries(t?.env || {})
        .map(([k, v]) => `${k}=${v}`)
        .join("\n"),
      placeholder: "KEY=value",
    });
    const num = (n, v) => h("input", { name: n, type: "number", min: 0, value: v || "", style: "width:7rem" });
    const mem = num("memory_mb", t?.memory_mb);
    const cpu = num("cpu_cores", t?.cpu_cores);
    const ttl = num("ttl_seconds", t?.ttl_seconds);
    const pool = num("pool_size", t?.pool_size);
    const idle = num("idle_timeout", t?.idle_timeout);
    const onIdle = h("select", { name: "on_idle" }, ["", "pause", "destroy"].map((v) => h("option", { value: v, selected: (t?.on_idle || "") === v }, v || "server default")));
    const prov = h("select", { name: "provider" }, h("option", { value: "" }, "default"), providers.map((p) => h("option", { value: p.name, selected: t?.provider === p.name }, p.name)));
    const save = h("button", { type: "submit", class: "primary" }, t ? "Save" : "Create");
    const msg = h("div", { "aria-live": "polite" });
    clear(
      formSlot,
      h(
        "form",
        {
          class: "card",
          "aria-label": t ? `Edit template ${t.name}` : "New template",
          onsubmit: (ev) => {
            ev.preventDefault();
            const envObj = {};
            for (const line of env.value.split("\n")) {
              if (!line.trim()) continue;
              const i = line.indexOf("=");
              if (i <= 0) {
                clear(msg, errorBox({ message: `environment line ${JSON.stringify(line)} is not KEY=value` }));
                return;
              }
              envObj[line.slice(0, i).trim()] = line.slice(i + 1);
            }
            const body = {
              name: t ? t.name : name.value.trim(),
              image: image.value.trim(),
              description: desc.value,
              setup: setup.value.split("\n").filter((l) => l.trim()),
              env: envObj,
              memory_mb: Number(mem.value) || 0,
              cpu_cores: Number(cpu.value) || 0,
              ttl_seconds: Number(ttl.value) || 0,
              pool_size: Number(pool.value) || 0,
              idle_timeout: Number(idle.value) || 0,
              on_idle: onIdle.value,
              provider: prov.value,
              environment: envRef.value.trim(),
            };
            busy(save, async () => {
              clear(msg);
              try {
                if (t) await api("PUT", tplPath(t.name), { json: body });
                else await api("POST", "/templates", { json: body });
                notice(`${t ? "Saved" : "Created"} template ${body.name}.`);
                clear(formSlot);
                load();
              } catch (e) {
                msg.append(errorBox(e, t ? "Save" : "Create"));
              }
            });
          },
        },
        h("h2", { style: "margin-top:0" }, t ? `Edit ${t.name} (version ${t.version})` : "New template"),
        h("div", { class: "row" }, field("Name", name), h("div", { class: "field wide" }, h("label", { for: "tpl-image" }, "Image"), Object.assign(image, { id: "tpl-image" })), field("Provider", prov)),
        field("Description", desc),
        field("Environment (spec or build ID)", envRef, "instead of an image: spawns use the environment's newest ready build"),
        field("Setup commands (one per line)", setup),
        field("Environment (KEY=value per line)", env),
        h("div", { class: "row" }, field("Memory (MB)", mem), field("CPU cores", cpu), field("TTL (seconds)", ttl), field("Pool size", pool, "warm sandboxes kept ready"), field("Idle timeout (s)", idle), field("When idle", onIdle)),
        msg,
        h("div", { class: "row", style: "margin-top:.75rem" }, save, h("button", { type: "button", onclick: () => clear(formSlot) }, "Cancel")),
      ),
    );
    (t ? image : name).focus();
  }

  async function spawn(t, button) {
    await busy(button, async () => {
      try {
        const sb = await api("POST", tplPath(t.name) + "/spawn", { json: {} });
        notice(`Spawned ${sb.id} from ${t.name}.`);
        location.hash = `#/sandboxes/${encodeURIComponent(sb.id)}`;
      } catch (e) {
        clear(status, errorBox(e, `Spawn from ${t.name}`));
      }
    });
  }

  async function remove(t) {
    if (!(await confirmDialog(`Delete template ${t.name}? Sandboxes spawned from it keep running.`, "Delete"))) return;
    try {
      await api("DELETE", tplPath(t.name));
      notice(`Deleted template ${t.name}.`);
      load();
    } catch (e) {
      clear(status, errorBox(e, `Delete ${t.name}`));
    }
  }

  async function load() {
    let list;
    try {
      list = await api("GET", "/templates", { signal });
    } catch (e) {
      if (e.name !== "AbortError") clear(listSlot, errorBox(e, "Listing templates"));
      return;
    }
    if (!list.length) {
      clear(listSlot, empty("No templates yet.", "Create one with “New template”, or from the command line: ", code("stacyvm templates create --name NAME --image IMAGE"), "."));
      return;
    }
    clear(
      listSlot,
      h(
        "div",
        { class: "table-wrap", style: "margin-top:1rem" },
        h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["Name", "Image", "Setup", "Limits", "Pool", "Actions"].map((c, i) => h("th", { scope: "col", class: i === 2 || i === 3 ? "hide-narrow" : "" }, c)))),
          h(
            "tbody",
            {},
            list.map((t) => {
              const spawnBtn = h("button", { type: "button", class: "primary" }, "Spawn");
              spawnBtn.addEventListener("click", () => spawn(t, spawnBtn));
              return h(
                "tr",
                { "data-name": t.name },
                h("th", { scope: "row" }, t.name, h("div", { class: "muted", style: "font-weight:normal" }, t.description || "")),
                h("td", { class: "mono" }, t.environment ? h("a", { href: t.environment.startsWith("envb-") ? `#/environments/builds/${encodeURIComponent(t.environment)}` : "#/environments" }, `environment ${t.environment}`) : t.image || "(default)"),
                h("td", { class: "mono hide-narrow" }, t.setup.length ? t.setup.join(" ; ") : "—"),
                h("td", { class: "hide-narrow" }, [t.memory_mb ? `${t.memory_mb} MB` : null, t.cpu_cores ? `${t.cpu_cores} CPU` : null, t.ttl_seconds ? `TTL ${t.ttl_seconds}s` : null, t.idle_timeout ? `idle ${t.idle_timeout}s → ${t.on_idle || "pause"}` : null, t.provider].filter(Boolean).join(" · ") || "defaults"),
                h("td", {}, t.pool_size || "—"),
                h(
                  "td",
                  { class: "actions" },
                  spawnBtn,
                  " ",
                  h("button", { type: "button", onclick: () => showForm(t), "aria-label": `Edit ${t.name}` }, "Edit"),
                  " ",
                  h("button", { type: "button", class: "danger", onclick: () => remove(t), "aria-label": `Delete ${t.name}` }, "Delete"),
                ),
              );
            }),
          ),
        ),
      ),
    );
  }
  await load();
}
