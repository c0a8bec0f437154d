// The HTTP API, as the browser calls it. A signed-in visitor's bearer token lives in
// this tab's session storage (gone when the tab closes, never shared with other tabs)
// and travels only in the Authorization header, never in a URL.

import { h, segments, qs, ui } from "./dom.js";

const TOKEN_KEY = "artifactstore.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
  dispatchEvent(new Event("artifactstore:token"));
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Addresses of the API. `redirect=0`: with `[s3] download = "redirect"` the server
// would send a file GET to the bucket, another origin; the browser's own reads stay
// with the server.
export const v1 = {
  namespaces: (query) => `/v1/artifacts${qs(query)}`,
  names: (ns, query) => `/v1/artifacts/${segments(ns)}${qs(query)}`,
  versions: (ns, name, query) => `/v1/artifacts/${segments(ns, name)}${qs(query)}`,
  version: (ns, name, v, query) => `/v1/artifacts/${segments(ns, name, v)}${qs(query)}`,
  file: (ns, name, v, path, query) => `/v1/artifacts/${segments(ns, name, v, path)}${qs(query)}`,
  events: (query) => `/v1/events${qs(query)}`,
};

export function authHeaders(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

/** A request to the API; JSON back, or the response itself with `raw`. Refusals and
 * failures throw an `ApiError` with the server's code and message. */
export async function api(url, { signal, raw, headers, method = "GET", anonymous } = {}) {
  let resp;
  try {
    resp = await fetch(url, {
      method,
      signal,
      headers: anonymous ? headers : authHeaders(headers),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "unreachable", "The server did not answer.");
  }
  if (!resp.ok && resp.status !== 206) {
    let code = `http_${resp.status}`;
    let message = resp.statusText || `HTTP ${resp.status}`;
    try {
      const body = await resp.json();
      code = body.error?.code || code;
      message = body.error?.message || message;
    } catch {
      // Not the API's envelope: keep the status.
    }
    throw new ApiError(resp.status, code, message);
  }
  return raw ? resp : resp.json();
}

/** Every file of a version, following the manifest's pages. */
export async function manifestWithAllFiles(ns, name, version, signal) {
  const first = await api(v1.version(ns, name, version), { signal });
  // Later pages name the version the first resolved to: `latest` may move meanwhile.
  let cursor = first.next_cursor;
  while (cursor) {
    const page = await api(v1.version(ns, name, first.version, { cursor }), { signal });
    first.files.push(...page.files);
    cursor = page.next_cursor;
  }
  return first;
}

/** Saves a file. Signed in, the bytes are fetched with the token and saved from
 * memory (a link cannot carry the header); otherwise a plain link does it. */
export async function download(url, fileName) {
  const a = document.createElement("a");
  a.download = fileName;
  let objectUrl = null;
  if (token()) {
    const resp = await api(url, { raw: true });
    objectUrl = URL.createObjectURL(await resp.blob());
    a.href = objectUrl;
  } else {
    a.href = url;
  }
  document.body.append(a);
  a.click();
  a.remove();
  if (objectUrl) setTimeout(() => URL.revokeObjectURL(objectUrl), 60_000);
}

/** How a failed request is shown: the server's message and code, and for a refusal
 * the way to a token that may do it. */
export function errorBox(e) {
  if (!(e instanceof ApiError)) {
    console.error(e);
    return h("div", { class: "error", role: "alert" }, "Something went wrong: ", String(e.message || e));
  }
  const box = h("div", { class: "error", role: "alert" }, h("strong", {}, e.message), " ", h("code", {}, e.code));
  if (e.status === 401 || e.status === 403) {
    const next = `?next=${encodeURIComponent(location.pathname + location.search)}`;
    box.append(h("p", {},
      token() ? "The token you signed in with does not grant this. " : "This needs a token. ",
      h("a", { href: ui.signin() + next }, token() ? "Sign in with another" : "Sign in")));
  }
  return box;
}
