// Small DOM helpers shared by the pages.

// h builds an element: h("a", {href: "#/"}, "text", child, ...). Props
// starting with "on" are listeners; class, for, aria-* and data-* are
// attributes; the rest are properties.
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class" || k === "for" || k === "role" || k.startsWith("aria-") || k.startsWith("data-") || k === "list")
      el.setAttribute(k, v === true ? "" : v);
    else el[k] = v;
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// errorBox shows an API error as the server phrased it, with its code,
// hint and request ID (which the server's log carries too).
export function errorBox(err, what) {
  const msg = err?.message || String(err);
  return h(
    "div",
    { class: "error", role: "alert" },
    h("strong", {}, what ? `${what}: ` : "", msg),
    err?.hint ? h("div", { class: "hint" }, err.hint) : null,
    err?.code || err?.requestId
      ? h("div", { class: "meta" }, [err.code, err.status ? `HTTP ${err.status}` : null, err.requestId ? `request ${err.requestId}` : null].filter(Boolean).join(" · "))
      : null,
  );
}

// notice shows a short message in the page-wide live region.
let noticeTimer;
export function notice(text, kind = "ok") {
  const el = document.getElementById("notice");
  clear(el, h("div", { class: `toast ${kind}` }, text));
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => el.replaceChildren(), 6000);
}

export function empty(text, ...next) {
  return h("div", { class: "empty" }, h("p", {}, text), next.length ? h("p", { class: "next" }, ...next) : null);
}

export function code(text) {
  return h("code", {}, text);
}

export function stateBadge(state) {
  return h("span", { class: `badge state-${state}` }, state);
}

export function fmtTime(s) {
  if (!s) return "—";
  const d = new Date(s);
  return isNaN(d) ? s : d.toLocaleString();
}

// relTime says how far s is from now: "in 12 min", "3 h ago".
export function relTime(s) {
  if (!s) return "—";
  const d = new Date(s).getTime() - Date.now();
  if (isNaN(d)) return s;
  const a = Math.abs(d);
  const [n, u] =
    a < 60e3 ? [Math.round(a / 1e3), "s"] : a < 3600e3 ? [Math.round(a / 60e3), "min"] : a < 86400e3 ? [Math.round(a / 3600e3), "h"] : [Math.round(a / 86400e3), "d"];
  return d >= 0 ? `in ${n} ${u}` : `${n} ${u} ago`;
}

export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let i = -1;
  do {
    n /= 1024;
    i++;
  } while (n >= 1024 && i < units.length - 1);
  return `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

// confirmDialog asks a yes/no question in a modal <dialog> (keyboard:
// focus starts on Cancel, Esc cancels) and resolves to the answer.
export function confirmDialog(question, yes = "Confirm") {
  return new Promise((resolve) => {
    const cancel = h("button", { type: "button", onclick: () => dlg.close("no") }, "Cancel");
    const ok = h("button", { type: "button", class: "danger", onclick: () => dlg.close("yes") }, yes);
    const dlg = h("dialog", { class: "confirm", "aria-label": question }, h("p", {}, question), h("div", { class: "actions" }, cancel, ok));
    dlg.addEventListener("close", () => {
      dlg.remove();
      resolve(dlg.returnValue === "yes");
    });
    document.body.append(dlg);
    dlg.showModal();
    cancel.focus();
  });
}

// field is a labelled form control.
export function field(label, control, help) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), control, help ? h("small", {}, help) : null);
}

// busy disables a button while fn runs.
export async function busy(button, fn) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await fn();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

// kv renders an object as a definition list.
export function kv(entries) {
  return h(
    "dl",
    { class: "kv" },
    entries.filter(([, v]) => v !== undefined).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v === null || v === "" ? "—" : v)]),
  );
}
