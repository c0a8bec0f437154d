// The browser's entry: routing by the path (every page is a plain URL that survives a
// reload), the account menu and sign-in.

import { h, clear, header, ui, moved } from "./dom.js";
import { api, v1, token, setToken, ApiError, errorBox } from "./api.js";
import { namespacesPage, namesPage, versionsPage } from "./browse.js";
import { versionPage } from "./version.js";
import { comparePage } from "./compare.js";
import { filePage } from "./file.js";
import { startFeed, onEvent } from "./live.js";

const main = document.getElementById("main");
let current = null;

/** Which page a path is: `/ui/NS/NAME/VERSION/PATH…`, with `-` segments (which no name
 * can be) for the pages that are not a thing in the store. */
function route(pathname) {
  const segs = pathname.replace(/^\/ui\/?/, "").split("/").filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  const [ns, name, third, ...rest] = segs;
  if (segs.length === 0) return { page: namespacesPage };
  if (ns === "-" && name === "signin" && segs.length === 2) return { page: signinPage };
  if (segs.length === 1) return { page: namesPage, ns };
  if (segs.length === 2) return { page: versionsPage, ns, name };
  if (third === "-" && rest.length === 1 && rest[0] === "compare") return { page: comparePage, ns, name };
  if (segs.length === 3) return { page: versionPage, ns, name, version: third };
  return { page: filePage, ns, name, version: third, path: rest.join("/") };
}

/** Shows the page of the current URL. Each page gets a signal that aborts its
 * requests when the visitor moves on, and `ctx.onEvent` for the live feed. */
async function render() {
  current?.abort();
  const ctrl = new AbortController();
  current = ctrl;
  const unsubscribe = [];
  ctrl.signal.addEventListener("abort", () => unsubscribe.forEach((u) => u()));
  const ctx = {
    signal: ctrl.signal,
    query: new URLSearchParams(location.search),
    onEvent: (fn) => unsubscribe.push(onEvent(fn)),
    navigate,
  };
  const params = route(location.pathname);
  clear(main);
  try {
    await params.page(main, params, ctx);
  } catch (e) {
    if (e.name === "AbortError" || ctrl.signal.aborted) return;
    main.append(errorBox(e));
    if (moved.focus && current === ctrl) main.focus();
  }
  if (current === ctrl) moved.focus = false;
}

export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  moved.focus = true;
  scrollTo(0, 0);
  render();
}

// Links to the browser's own pages change the page without a reload.
document.addEventListener("click", (e) => {
  const a = e.target.closest?.("a[href]");
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  if (a.target || a.hasAttribute("download")) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith("/ui/")) return;
  if (url.pathname === location.pathname && url.search === location.search && url.hash) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
});

addEventListener("popstate", () => {
  moved.focus = true;
  render();
});

function renderAccount() {
  const nav = clear(document.getElementById("account"));
  if (token()) {
    nav.append(h("span", { class: "muted" }, "Signed in"), " ", h("button", {
      type: "button",
      class: "link",
      onclick: () => {
        setToken(null);
        navigate(ui.home());
      },
    }, "Sign out"));
  } else {
    nav.append(h("a", { href: ui.signin() }, "Sign in"));
  }
}

async function signinPage(main, _params, ctx) {
  header(main, "Sign in", [["Namespaces", ui.home()], ["Sign in"]]);
  const input = h("input", {
    id: "token", name: "token", type: "password", required: true,
    autocomplete: "off", spellcheck: "false", "aria-describedby": "token-help",
  });
  const status = h("p", { role: "status", class: "status", "aria-live": "polite" });
  const form = h("form", { class: "signin", method: "post", action: ui.signin() },
    h("label", { for: "token" }, "Bearer token"),
    input,
    h("p", { id: "token-help", class: "muted" },
      "A static token (ast_…) or an OIDC token this server trusts. It stays in this tab's session storage ",
      "and is sent to this server only, as an Authorization header."),
    h("button", { type: "submit" }, "Sign in"),
    status);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const t = input.value.trim();
    status.textContent = "Checking…";
    status.classList.remove("refused");
    try {
      await api(v1.namespaces({ limit: "1" }), { headers: { Authorization: `Bearer ${t}` }, anonymous: true, signal: ctx.signal });
    } catch (err) {
      // 403: a known token that may read nothing listable (a writer, say): still signed in.
      if (!(err instanceof ApiError) || err.status !== 403) {
        status.textContent = `Not signed in: ${err.message}`;
        status.classList.add("refused");
        input.focus();
        return;
      }
    }
    setToken(t);
    const next = ctx.query.get("next");
    ctx.navigate(next && next.startsWith("/ui/") && !next.startsWith("//") ? next : ui.home());
  });
  main.append(form);
  input.focus();
}

addEventListener("artifactstore:token", () => {
  renderAccount();
  startFeed();
});

renderAccount();
startFeed();
render();
