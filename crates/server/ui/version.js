// One version: what it is (state, labels, times, totals), its files as a tree with
// sizes, digests and media types, downloads, and the commands that fetch it.

import { h, header, ui, bytes, time, badge, command, digest } from "./dom.js";
import { api, v1, token, download, manifestWithAllFiles, errorBox } from "./api.js";

/** The shell commands that fetch `target` (`NS/NAME@VERSION[/PATH]`) with the CLI into
 * `output`, and `url` with curl into `curlOutput`. A token is named by its variable,
 * never written out: both read `$ARTIFACTSTORE_TOKEN`. */
export function fetchCommands(target, output, url, curlOutput) {
  const server = location.origin;
  const auth = token() ? ` -H "Authorization: Bearer $ARTIFACTSTORE_TOKEN"` : "";
  return [
    command("artifactstore", `artifactstore --server ${server} get ${target} -o ${shellWord(output)}`),
    command("curl", `curl -fL${auth} -o ${shellWord(curlOutput)} ${shellWord(server + url)}`),
    token() ? h("p", { class: "muted" }, "Both read your token from ARTIFACTSTORE_TOKEN.") : null,
  ];
}

/** `s` quoted for a POSIX shell when it needs it. */
export function shellWord(s) {
  return /^[A-Za-z0-9._\/:=@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** A download: a button-like link, or a plain one (`label` says which file) in a table. */
export function downloadLink(url, fileName, text = "Download", label = null) {
  const a = h("a", { href: url, download: fileName, class: label ? null : "button", "aria-label": label }, text);
  // Signed in, a link cannot carry the token: fetch with it and save from memory.
  a.addEventListener("click", (e) => {
    if (!token()) return;
    e.preventDefault();
    download(url, fileName).catch((err) => a.after(errorBox(err)));
  });
  return a;
}

export async function versionPage(main, { ns, name, version }, ctx) {
  const m = await manifestWithAllFiles(ns, name, version, ctx.signal);
  const v = m.version;
  header(main, `${name} @ ${v}`, [["Namespaces", ui.home()], [ns, ui.namespace(ns)], [name, ui.name(ns, name)], [v]]);
  if (version !== v) {
    main.append(h("p", { class: "notice" }, `“${version}” is ${v} right now. `,
      h("a", { href: ui.version(ns, name, v) }, "Link to this version"), " stays the same when a newer one completes."));
  }
  const facts = h("dl", { class: "facts" },
    fact("State", badge(m.state)),
    fact("Files", String(m.file_count)),
    fact("Total size", bytes(m.total_size)),
    fact("Created", time(m.created_at)),
    m.completed_at ? fact("Completed", time(m.completed_at)) : null,
    m.expires_at ? fact("Expires", time(m.expires_at)) : null,
    fact("Labels", Object.keys(m.labels).length
      ? Object.entries(m.labels).map(([k, val]) => h("a", { class: "chip", href: ui.name(ns, name, { label: `${k}=${val}` }) }, `${k}=${val}`))
      : h("span", { class: "muted" }, "none")));
  main.append(facts);

  const base = `${name}-${v}`;
  main.append(h("section", { "aria-labelledby": "get-title" },
    h("h2", { id: "get-title" }, "Get it"),
    h("p", { class: "actions" },
      downloadLink(v1.version(ns, name, v, { format: "tar" }), `${base}.tar`, "Download .tar"), " ",
      downloadLink(v1.version(ns, name, v, { format: "zip" }), `${base}.zip`, "Download .zip")),
    fetchCommands(`${ns}/${name}@${v}`, `${base}/`, v1.version(ns, name, v, { format: "tar" }), `${base}.tar`)));

  main.append(await compareForm(ns, name, v, ctx));

  main.append(h("section", { "aria-labelledby": "files-title" },
    h("h2", { id: "files-title" }, "Files"),
    m.files.length ? fileTree(ns, name, v, m.files) : h("p", { class: "muted" }, "No files yet.")));
}

function fact(term, ...value) {
  return h("div", {}, h("dt", {}, term), h("dd", {}, value));
}

async function compareForm(ns, name, v, ctx) {
  const select = h("select", { id: "compare-with", name: "with" });
  const form = h("form", { class: "inline", "aria-label": "Compare with another version" },
    h("label", { for: "compare-with" }, "Compare with"), select, h("button", { type: "submit" }, "Compare"));
  try {
    const page = await api(v1.versions(ns, name, { limit: "50" }), { signal: ctx.signal });
    const others = page.items.map((x) => x.version).filter((x) => x !== v);
    if (!others.length) return h("p", { class: "muted" }, "No other version to compare with.");
    for (const o of others) select.append(h("option", { value: o }, o));
    // By default the one before this: what changed in this run.
    const mine = page.items.findIndex((x) => x.version === v);
    const older = page.items[mine + 1]?.version;
    if (older) select.value = older;
  } catch (e) {
    if (e.name === "AbortError") throw e;
    return errorBox(e);
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    ctx.navigate(ui.compare(ns, name, select.value, v));
  });
  return form;
}

/** Paths as a tree: a directory row before its files, each directory folding away. */
function fileTree(ns, name, v, files) {
  const body = h("tbody");
  const dirs = new Map();
  let previous = [];
  for (const f of [...files].sort(treeOrder)) {
    const parts = f.path.split("/");
    const dirParts = parts.slice(0, -1);
    // Directory rows for each level not shared with the previous file.
    let same = 0;
    while (same < dirParts.length && previous[same] === dirParts[same]) same++;
    for (let d = same; d < dirParts.length; d++) {
      const dir = dirParts.slice(0, d + 1).join("/");
      const toggle = h("button", { type: "button", class: "dir", "aria-expanded": "true" }, `${dirParts[d]}/`);
      const row = h("tr", { class: "dir-row", "data-dir": dir }, indented(h("td", { colspan: "5" }, toggle), d));
      dirs.set(dir, { row, toggle });
      toggle.addEventListener("click", () => fold(body, dir, toggle));
      body.append(row);
    }
    previous = dirParts;
    body.append(h("tr", { "data-path": f.path },
      indented(h("th", { scope: "row" }, h("a", { href: ui.file(ns, name, v, f.path) }, parts[parts.length - 1])), dirParts.length),
      h("td", { class: "num" }, bytes(f.size)),
      h("td", {}, h("code", { class: "type" }, f.media_type)),
      h("td", {}, digest(f.digest)),
      h("td", {}, downloadLink(v1.file(ns, name, v, f.path), parts[parts.length - 1], "Download", `Download ${f.path}`))));
  }
  return h("div", { class: "scroll" }, h("table", { class: "files" },
    h("caption", { class: "sr-only" }, "Files by path"),
    h("thead", {}, h("tr", {}, ["Path", "Size", "Media type", "Digest (SHA-256)", ""].map((t) => h("th", { scope: "col" }, t ? t : h("span", { class: "sr-only" }, "Download"))))),
    body));
}

/** By path, a directory's files before the next directory, each level's
 * subdirectories before its own files, so that every file sits under its directory. */
function treeOrder(a, b) {
  const x = a.path.split("/");
  const y = b.path.split("/");
  for (let i = 0; ; i++) {
    const xDir = i < x.length - 1;
    const yDir = i < y.length - 1;
    if (xDir !== yDir) return xDir ? -1 : 1;
    if (x[i] !== y[i]) return x[i] < y[i] ? -1 : 1;
    if (!xDir) return 0;
  }
}

/** Set through the CSSOM: the page's policy refuses style attributes in markup. */
function indented(cell, depth) {
  cell.style.setProperty("--depth", String(depth));
  return cell;
}

function fold(body, dir, toggle) {
  const open = toggle.getAttribute("aria-expanded") !== "true";
  toggle.setAttribute("aria-expanded", String(open));
  for (const row of body.querySelectorAll("tr")) {
    const p = row.dataset.path || row.dataset.dir;
    if (!p || !p.startsWith(`${dir}/`)) continue;
    row.hidden = !open;
    // Reopening shows what was folded inside too.
    if (open) row.querySelector("button.dir")?.setAttribute("aria-expanded", "true");
  }
}
