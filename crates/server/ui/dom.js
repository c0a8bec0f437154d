// Building the page. Every piece of text from the server or from a file goes in as a
// text node or an attribute value, never as markup: nothing here parses HTML.

/** An element: `h("a", {href, class: "x", onclick}, "text", child, [more])`. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

export function bytes(n) {
  if (n === undefined || n === null) return "";
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${UNITS[i]}`;
}

/** A `<time>` showing how long ago, with the exact time as its title. */
export function time(ts) {
  if (!ts) return h("span", { class: "muted" }, "—");
  const d = new Date(ts);
  return h("time", { datetime: d.toISOString(), title: d.toLocaleString() }, ago(d));
}

export function ago(d) {
  const minutes = (Date.now() - d.getTime()) / 60000;
  if (minutes < 0.75) return "just now";
  if (minutes < 60) return `${Math.round(minutes)} min ago`;
  if (minutes < 24 * 60) return `${Math.round(minutes / 60)} h ago`;
  if (minutes < 30 * 24 * 60) return `${Math.round(minutes / 1440)} d ago`;
  return d.toLocaleDateString();
}

/** `/`-joined, each segment percent-encoded. */
export function segments(...parts) {
  return parts.flatMap((p) => String(p).split("/")).map(encodeURIComponent).join("/");
}

// Addresses of the browser's own pages: every page is a plain URL.
export const ui = {
  home: () => "/ui/",
  signin: () => "/ui/-/signin",
  namespace: (ns) => `/ui/${segments(ns)}`,
  name: (ns, name, query) => `/ui/${segments(ns, name)}${qs(query)}`,
  version: (ns, name, v) => `/ui/${segments(ns, name, v)}`,
  file: (ns, name, v, path) => `/ui/${segments(ns, name, v, path)}`,
  compare: (ns, name, from, to) => `/ui/${segments(ns, name)}/-/compare${qs({ from, to })}`,
};

export function qs(query) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) if (v) p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : "";
}

/** Runs `fn` over `items`, at most `n` at a time, so that a page of rows does not hold
 * every connection the browser allows one server (the event feed needs one). */
export async function pool(items, n, fn) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
}

/** A command to copy, with a button that copies it. */
export function command(label, text) {
  const code = h("code", {}, text);
  const status = h("span", { class: "copied", role: "status" });
  const button = h("button", {
    type: "button",
    class: "small",
    "aria-label": `Copy: ${label}`,
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(text);
        status.textContent = "Copied";
      } catch {
        // No clipboard (plain HTTP off localhost): select the text for the user.
        getSelection().selectAllChildren(code);
        status.textContent = "Selected: press Ctrl+C";
      }
      setTimeout(() => (status.textContent = ""), 2500);
    },
  }, "Copy");
  return h("div", { class: "command" }, h("span", { class: "label" }, label), h("pre", {}, code), button, status);
}

/** Set when the visitor moves to another page: its heading then takes the focus as
 * soon as it is shown, which tells a screen reader and puts the keyboard at its start. */
export const moved = { focus: false };

/** The page's outline: breadcrumbs and a heading that takes focus after navigation. */
export function header(main, title, crumbs = []) {
  document.title = `${title} · artifact-store`;
  if (crumbs.length) {
    const items = crumbs.map(([text, href]) => h("li", {}, href ? h("a", { href }, text) : h("span", { "aria-current": "page" }, text)));
    main.append(h("nav", { "aria-label": "Breadcrumb", class: "crumbs" }, h("ol", {}, items)));
  }
  const h1 = h("h1", { tabindex: "-1" }, title);
  main.append(h1);
  if (moved.focus) {
    moved.focus = false;
    h1.focus({ preventScroll: true });
  }
  return h1;
}

export function badge(state) {
  return h("span", { class: `badge ${state}` }, state);
}

/** A short form of a digest, the whole of it in a tooltip and for copying. */
export function digest(d) {
  const hex = String(d).replace(/^sha256:/, "");
  return h("code", { class: "digest", title: d }, hex.slice(0, 12));
}
