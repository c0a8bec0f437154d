// One file: what it is, how to get it, and a preview — text and logs with line
// numbers, Markdown rendered as DOM, JSON pretty-printed, images, and HTML reports in
// a sandboxed frame. A file larger than a preview shows is offered as a download.

import { h, header, ui, bytes, command } from "./dom.js";
import { api, v1, token, ApiError } from "./api.js";
import { renderMarkdown } from "./markdown.js";
import { downloadLink, fetchCommands } from "./version.js";

/** Largest file shown as text, Markdown or JSON, and the head shown of a larger one. */
const TEXT_MAX = 2 << 20;
const TEXT_HEAD = 256 << 10;
/** Largest image or HTML report shown. */
const MEDIA_MAX = 16 << 20;

const TEXT_TYPES = new Set(["application/json", "application/x-ndjson", "application/xml", "application/yaml",
  "application/x-yaml", "application/toml", "application/javascript", "application/x-sh", "application/sql"]);
const TEXT_EXTENSIONS = new Set(["txt", "log", "out", "err", "md", "markdown", "json", "ndjson", "yaml", "yml", "toml",
  "xml", "csv", "tsv", "ini", "cfg", "conf", "sh", "py", "rs", "go", "java", "js", "ts", "c", "h", "cpp", "diff", "patch"]);
const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/svg+xml", "image/bmp"]);

export function previewKind(mediaType, path) {
  const t = mediaType.split(";")[0].trim().toLowerCase();
  const base = path.split("/").pop();
  const ext = base.includes(".") ? base.split(".").pop().toLowerCase() : "";
  if (t === "text/html" || t === "application/xhtml+xml") return "html";
  if (IMAGE_TYPES.has(t)) return "image";
  if (t === "text/markdown" || t === "text/x-markdown" || ((ext === "md" || ext === "markdown") && !t.startsWith("image/"))) return "markdown";
  if (t === "application/json" || t.endsWith("+json") || ext === "json") return "json";
  if (t.startsWith("text/") || TEXT_TYPES.has(t) || t.endsWith("+xml") || TEXT_EXTENSIONS.has(ext)) return "text";
  return null;
}

export async function filePage(main, { ns, name, version, path }, ctx) {
  const url = v1.file(ns, name, version, path, { redirect: "0" });
  let head;
  try {
    head = await api(url, { method: "HEAD", raw: true, signal: ctx.signal });
  } catch (e) {
    // A HEAD answer has no body to say why: the version's manifest does.
    if (e.status !== 404) throw e;
    await api(v1.version(ns, name, version, { limit: "1" }), { signal: ctx.signal });
    throw new ApiError(404, "file_not_found", `${ns}/${name}@${version} has no file ${path}`);
  }
  const v = head.headers.get("x-artifact-version") || version;
  const size = Number(head.headers.get("content-length"));
  const mediaType = head.headers.get("content-type") || "application/octet-stream";
  const digest = head.headers.get("x-artifact-digest") || "";
  const base = path.split("/").pop();
  header(main, base, [["Namespaces", ui.home()], [ns, ui.namespace(ns)], [name, ui.name(ns, name)], [v, ui.version(ns, name, v)], [path]]);
  if (version !== v) {
    main.append(h("p", { class: "notice" }, `“${version}” is ${v} right now: `,
      h("a", { href: ui.file(ns, name, v, path) }, "Link to this file in this version"), "."));
  }
  const fileUrl = v1.file(ns, name, v, path);
  main.append(h("dl", { class: "facts" },
    fact("Path", h("code", {}, path)),
    fact("Size", `${bytes(size)} (${size.toLocaleString()} bytes)`),
    fact("Media type", h("code", {}, mediaType)),
    fact("Digest", h("code", { class: "digest-full" }, digest))));
  main.append(h("p", { class: "actions" }, downloadLink(fileUrl, base)));
  main.append(h("details", { class: "commands" }, h("summary", {}, "Commands"),
    fetchCommands(`${ns}/${name}@${v}/${path}`, base, fileUrl, base),
    command("digest check", `echo '${digest.replace(/^sha256:/, "")}  ${base}' | sha256sum -c`)));

  const section = h("section", { "aria-labelledby": "preview-title", class: "preview" }, h("h2", { id: "preview-title" }, "Preview"));
  main.append(section);
  const kind = previewKind(mediaType, path);
  const previewUrl = v1.file(ns, name, v, path, { redirect: "0" });
  if (!kind) {
    section.append(h("p", { class: "muted" }, `No preview for ${mediaType}. `, downloadLink(fileUrl, base, "Download it")));
    return;
  }
  const max = kind === "image" || kind === "html" ? MEDIA_MAX : TEXT_MAX;
  if (size > max) {
    const note = h("p", { class: "notice" }, `This file is ${bytes(size)}; previews stop at ${bytes(max)}. `,
      downloadLink(fileUrl, base, "Download instead"));
    section.append(note);
    if (kind !== "image" && kind !== "html") {
      note.append(" ", h("button", {
        type: "button", class: "link",
        onclick: async (e) => {
          e.target.remove();
          const resp = await api(previewUrl, { raw: true, signal: ctx.signal, headers: { Range: `bytes=0-${TEXT_HEAD - 1}` } });
          section.append(h("p", { class: "muted" }, `The first ${bytes(TEXT_HEAD)}:`), textView(decode(await resp.arrayBuffer()), true));
        },
      }, `Show the first ${bytes(TEXT_HEAD)}`));
    }
    return;
  }
  if (kind === "image") return imagePreview(section, previewUrl, base, ctx);
  if (kind === "html") return htmlPreview(section, ns, name, v, path, base, ctx);
  const resp = await api(previewUrl, { raw: true, signal: ctx.signal });
  const text = decode(await resp.arrayBuffer());
  if (text.slice(0, 8000).includes("\u0000")) {
    section.append(h("p", { class: "muted" }, "This looks like binary data: no preview. ", downloadLink(fileUrl, base, "Download it")));
    return;
  }
  if (kind === "markdown") return markdownPreview(section, text, { ns, name, v, path });
  if (kind === "json") {
    try {
      return section.append(textView(JSON.stringify(JSON.parse(text), null, 2)));
    } catch (e) {
      section.append(h("p", { class: "muted" }, `Not valid JSON (${e.message}); shown as it is.`));
    }
  }
  section.append(textView(text));
}

function fact(term, value) {
  return h("div", {}, h("dt", {}, term), h("dd", {}, value));
}

function decode(buffer) {
  return new TextDecoder("utf-8").decode(buffer);
}

/** Text with line numbers (the list's own, so copying takes the text only). Terminal
 * colour codes of CI logs are dropped. */
function textView(text, partial = false) {
  const lines = text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "").split(/\r?\n/);
  if (lines.length > 1 && lines[lines.length - 1] === "" && !partial) lines.pop();
  const list = h("ol", { class: "lines", "aria-label": "Lines" });
  const digits = String(lines.length).length;
  list.style.setProperty("--digits", String(digits));
  for (const line of lines) list.append(h("li", {}, line));
  return h("div", { class: "scroll text" }, list);
}

function markdownPreview(section, text, { ns, name, v, path }) {
  const dir = path.split("/").slice(0, -1);
  const link = (href) => {
    if (/^https?:\/\//i.test(href)) {
      try {
        return { href: new URL(href).href, external: true };
      } catch {
        return null;
      }
    }
    // Any other scheme (javascript:, data:, …) or another host: no link.
    if (/^[a-z][a-z0-9+.-]*:/i.test(href) || href.startsWith("//") || href.startsWith("/")) return null;
    const target = href.split(/[?#]/)[0];
    const parts = [...dir];
    for (const seg of target.split("/")) {
      if (seg === "" || seg === ".") continue;
      if (seg === "..") {
        if (!parts.length) return null;
        parts.pop();
      } else {
        try {
          parts.push(decodeURIComponent(seg));
        } catch {
          return null;
        }
      }
    }
    return parts.length ? { href: ui.file(ns, name, v, parts.join("/")) } : null;
  };
  const rendered = renderMarkdown(text, { link });
  const source = textView(text);
  source.hidden = true;
  const show = (which) => () => {
    rendered.hidden = which !== "rendered";
    source.hidden = which !== "source";
    renderedBtn.setAttribute("aria-pressed", String(which === "rendered"));
    sourceBtn.setAttribute("aria-pressed", String(which === "source"));
  };
  const renderedBtn = h("button", { type: "button", "aria-pressed": "true" }, "Rendered");
  const sourceBtn = h("button", { type: "button", "aria-pressed": "false" }, "Source");
  renderedBtn.addEventListener("click", show("rendered"));
  sourceBtn.addEventListener("click", show("source"));
  section.append(h("div", { class: "toggle", role: "group", "aria-label": "Show" }, renderedBtn, sourceBtn), rendered, source);
}

async function imagePreview(section, url, base, ctx) {
  // Fetched with the token, so it works signed in; shown from memory.
  const resp = await api(url, { raw: true, signal: ctx.signal });
  const objectUrl = URL.createObjectURL(await resp.blob());
  ctx.signal.addEventListener("abort", () => URL.revokeObjectURL(objectUrl));
  section.append(h("div", { class: "image" }, h("img", { src: objectUrl, alt: `Preview of ${base}` })));
}

/** An HTML report runs in a frame sandboxed without `allow-same-origin`: an opaque
 * origin, so nothing in it can read this page, its storage or its token. The server
 * sends the file to a frame with `Content-Security-Policy: sandbox allow-scripts;
 * frame-ancestors 'self'` (the same opaque origin; its scripts run, so charts and
 * tables drawn by script work), and to anything else with a plain `sandbox`. */
async function htmlPreview(section, ns, name, v, path, base, ctx) {
  const src = v1.file(ns, name, v, path, { inline: "1" });
  const title = `Report ${base}`;
  // A frame's request carries no token: signed in, the report is framed directly only
  // when anyone may read it, else shown from a copy fetched with the token.
  let direct = !token();
  if (!direct) {
    try {
      await api(src, { method: "HEAD", anonymous: true, signal: ctx.signal });
      direct = true;
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
    }
  }
  if (direct) {
    section.append(h("p", { class: "muted" }, "Shown in a sandboxed frame: nothing in it can read this page or your token."),
      h("iframe", { class: "report", sandbox: "allow-scripts", src, title, referrerpolicy: "no-referrer" }));
    return;
  }
  const resp = await api(src, { raw: true, signal: ctx.signal });
  const frame = h("iframe", { class: "report", sandbox: "", title, referrerpolicy: "no-referrer" });
  frame.srcdoc = await resp.text();
  section.append(h("p", { class: "muted" }, "Shown from a copy fetched with your token, with its scripts off."), frame);
}

