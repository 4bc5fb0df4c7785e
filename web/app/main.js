// The dashboard's shell: sign-in, navigation and the hash router. Each
// page module exports render(main, params, ctx); ctx.signal aborts when
// the user leaves the page, and ctx.onLeave registers other cleanup.
import { api, apiKey, setApiKey, ApiError } from "./api.js";
import { h, clear, errorBox } from "./ui.js";

const pages = {
  overview: () => import("./pages/overview.js"),
  sandboxes: () => import("./pages/sandboxes.js"),
  sandbox: () => import("./pages/sandbox.js"),
  templates: () => import("./pages/templates.js"),
  environments: () => import("./pages/environments.js"),
  pools: () => import("./pages/pools.js"),
};

// routes map a location hash to a page and its parameters.
const routes = [
  [/^#?\/?$/, "overview"],
  [/^#\/sandboxes\/?$/, "sandboxes"],
  [/^#\/sandboxes\/([^/]+)(?:\/(terminal|files|log|activity))?\/?$/, "sandbox", ["id", "tab"]],
  [/^#\/templates\/?$/, "templates"],
  [/^#\/environments\/?$/, "environments"],
  [/^#\/environments\/builds\/([^/]+)\/?$/, "environments", ["build"]],
  [/^#\/pools\/?$/, "pools"],
];

const main = document.getElementById("main");
let leave = () => {};
let signedIn = false;
let firstRoute = true;

function match(hash) {
  const [path, qs] = hash.split("?");
  for (const [re, page, names = []] of routes) {
    const m = re.exec(path);
    if (m) {
      const params = Object.fromEntries(new URLSearchParams(qs || ""));
      names.forEach((n, i) => m[i + 1] !== undefined && (params[n] = decodeURIComponent(m[i + 1])));
      return { page, params };
    }
  }
  return null;
}

function markNav(page) {
  for (const a of document.querySelectorAll("#nav a")) {
    const target = a.dataset.page;
    if (target === page || (page === "sandbox" && target === "sandboxes")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function route() {
  leave();
  const ctrl = new AbortController();
  const cleanups = [];
  leave = () => {
    ctrl.abort();
    cleanups.splice(0).forEach((f) => f());
  };
  if (!signedIn) return;
  const r = match(location.hash);
  if (!r) {
    clear(main, h("h1", {}, "Not found"), h("p", {}, "No page at ", h("code", {}, location.hash), ". ", h("a", { href: "#/" }, "Go to the overview.")));
    return;
  }
  markNav(r.page);
  try {
    const mod = await pages[r.page]();
    if (ctrl.signal.aborted) return;
    clear(main);
    await mod.render(main, r.params, { signal: ctrl.signal, onLeave: (f) => cleanups.push(f), refresh: () => route() });
  } catch (e) {
    if (e.name === "AbortError" || ctrl.signal.aborted) return;
    clear(main, h("h1", {}, "Something went wrong"), errorBox(e));
  }
  // After a navigation, move focus to the new page for keyboard and
  // screen reader users, unless the page put it somewhere on purpose. A
  // fresh load keeps the browser's start, so the first Tab reaches "Skip
  // to content".
  if (!firstRoute && !main.contains(document.activeElement)) main.focus({ preventScroll: true });
  firstRoute = false;
}

function renderSession() {
  const el = document.getElementById("session");
  clear(el);
  if (apiKey()) {
    el.append(
      h(
        "button",
        {
          type: "button",
          class: "link",
          onclick: () => {
            setApiKey("");
            location.reload();
          },
        },
        "Sign out",
      ),
    );
  }
}

// signIn shows the key prompt. The key is checked against the API before
// it is kept (in session storage: gone when the tab closes).
function signIn(err) {
  signedIn = false;
  leave();
  markNav("");
  const input = h("input", { type: "password", name: "api-key", id: "api-key", autocomplete: "current-password", required: true, spellcheck: false });
  const status = h("div", { "aria-live": "polite" });
  if (err && apiKey()) status.append(errorBox(err, "The saved key was refused"));
  const form = h(
    "form",
    {
      class: "card signin",
      onsubmit: async (ev) => {
        ev.preventDefault();
        clear(status);
        setApiKey(input.value.trim());
        try {
          await api("GET", "/sandboxes", { query: { limit: 1 } });
          start();
        } catch (e) {
          setApiKey("");
          status.append(errorBox(e, "Sign-in failed"));
          input.focus();
        }
      },
    },
    h("h1", {}, "Sign in"),
    h("p", {}, "This server requires an API key (", h("code", {}, "server.api_key"), " or ", h("code", {}, "STACYVM_API_KEY"), ")."),
    h("div", { class: "field" }, h("label", { for: "api-key" }, "API key"), input),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    h("p", { class: "muted" }, "The key stays in this browser tab's session storage and is sent only to this server."),
    status,
  );
  clear(main, form);
  renderSession();
  input.focus();
}

async function start() {
  try {
    await api("GET", "/sandboxes", { query: { limit: 1 } });
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return signIn(e);
    clear(main, h("h1", {}, "Cannot reach the API"), errorBox(e));
    return;
  }
  signedIn = true;
  renderSession();
  route();
}

window.addEventListener("hashchange", route);
// Only a signed-in page reacts: the sign-in form reports its own refusals.
window.addEventListener("stacyvm:unauthorized", (ev) => signedIn && signIn(ev.detail));
start();
