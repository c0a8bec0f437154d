// A small Markdown renderer that builds DOM nodes, never markup: whatever a file holds
// ends up as text. It knows headings, paragraphs, emphasis, code, lists (task lists
// too), block quotes, rules, tables and links. Raw HTML in a file is shown as the text
// it is. Links go only to http(s) URLs or, resolved by the caller, to files of the same
// version; images are shown as links, since the page loads nothing from elsewhere.

import { h } from "./dom.js";

/** Renders `text`. `opts.link(href)` answers `{href, external}` for a link target it
 * accepts, or null (the link's text is then shown without a link). */
export function renderMarkdown(text, opts) {
  const ctx = { link: opts.link, ids: new Map() };
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  return h("div", { class: "md" }, blocks(lines, ctx));
}

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)/;
const ATX = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^( {0,12})([-*+]|\d{1,9}[.)])(?:[ \t]+(.*))?$/;
const SETEXT = /^ {0,3}(=+|-+)[ \t]*$/;
const TABLE_SEP = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;
const BLANK = /^[ \t]*$/;

const indentOf = (line) => line.match(/^ */)[0].length;

function startsBlock(line) {
  return FENCE.test(line) || ATX.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function blocks(lines, ctx) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (BLANK.test(line)) {
      i++;
    } else if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trimStart().startsWith(fence)) body.push(lines[i++]);
      i++;
      out.push(h("pre", { class: "code" }, h("code", { "data-lang": m[2] || null }, body.join("\n"))));
    } else if ((m = ATX.exec(line))) {
      out.push(heading(m[1].length, m[2] || "", ctx));
      i++;
    } else if (RULE.test(line)) {
      out.push(h("hr"));
      i++;
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && !BLANK.test(lines[i]) && (QUOTE.test(lines[i]) || !startsBlock(lines[i]))) {
        inner.push(lines[i++].replace(QUOTE, ""));
      }
      out.push(h("blockquote", {}, blocks(inner, ctx)));
    } else if (ITEM.test(line)) {
      i = list(lines, i, out, ctx);
    } else if (i + 1 < lines.length && line.includes("|") && TABLE_SEP.test(lines[i + 1])) {
      i = table(lines, i, out, ctx);
    } else if (/^( {4}|\t)/.test(line)) {
      const body = [];
      while (i < lines.length && (/^( {4}|\t)/.test(lines[i]) || BLANK.test(lines[i]))) {
        body.push(lines[i++].replace(/^( {4}|\t)/, ""));
      }
      while (body.length && BLANK.test(body[body.length - 1])) body.pop();
      out.push(h("pre", { class: "code" }, h("code", {}, body.join("\n"))));
    } else {
      const para = [line.trim()];
      i++;
      let level = 0;
      while (i < lines.length && !BLANK.test(lines[i])) {
        if ((m = SETEXT.exec(lines[i]))) {
          level = m[1][0] === "=" ? 1 : 2;
          i++;
          break;
        }
        if (startsBlock(lines[i])) break;
        para.push(lines[i++].trim());
      }
      const text = para.join("\n");
      out.push(level ? heading(level, text, ctx) : h("p", {}, inline(text, ctx)));
    }
  }
  return out;
}

/** A file's headings sit one level below the page's own title. */
function heading(level, text, ctx) {
  let slug = `md-${text.toLowerCase().replace(/[^\p{L}\p{N}]+/gu, "-").replace(/^-|-$/g, "")}`;
  const n = ctx.ids.get(slug) || 0;
  ctx.ids.set(slug, n + 1);
  if (n) slug += `-${n}`;
  return h(`h${Math.min(level + 1, 6)}`, { id: slug }, inline(text, ctx));
}

function list(lines, i, out, ctx) {
  const first = ITEM.exec(lines[i]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const el = h(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) el.setAttribute("start", String(parseInt(first[2], 10)));
  let tight = true;
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
    const content = [m[3] || ""];
    const inside = indent + m[2].length + 1;
    i++;
    while (i < lines.length) {
      const l = lines[i];
      if (BLANK.test(l)) {
        if (i + 1 < lines.length && indentOf(lines[i + 1]) > indent && !BLANK.test(lines[i + 1])) {
          tight = false;
          content.push("");
          i++;
          continue;
        }
        break;
      }
      if (indentOf(l) > indent) content.push(l.slice(Math.min(indentOf(l), inside)));
      else if (!startsBlock(l)) content.push(l.trim());
      else break;
      i++;
    }
    const li = h("li");
    const task = /^\[([ xX])\][ \t]+/.exec(content[0]);
    if (task) {
      content[0] = content[0].slice(task[0].length);
      li.className = "task";
      li.append(h("input", { type: "checkbox", disabled: true, checked: task[1] !== " ", "aria-label": task[1] !== " " ? "done" : "not done" }), " ");
    }
    for (const node of blocks(content, ctx)) {
      // A tight list's items are lines, not paragraphs.
      if (tight && node.tagName === "P") li.append(...node.childNodes);
      else li.append(node);
    }
    el.append(li);
    if (i < lines.length && BLANK.test(lines[i])) {
      if (i + 1 < lines.length && ITEM.test(lines[i + 1]) && ITEM.exec(lines[i + 1])[1].length === indent) {
        tight = false;
        i++;
        continue;
      }
      break;
    }
  }
  out.push(el);
  return i;
}

function cells(row) {
  return row.trim().replace(/^\|/, "").replace(/(?<!\\)\|$/, "").split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
}

function table(lines, i, out, ctx) {
  const head = cells(lines[i]);
  const align = cells(lines[i + 1]).map((c) =>
    c.startsWith(":") && c.endsWith(":") ? "al-center" : c.endsWith(":") ? "al-right" : null);
  i += 2;
  const body = h("tbody");
  while (i < lines.length && !BLANK.test(lines[i]) && lines[i].includes("|")) {
    const row = cells(lines[i++]);
    body.append(h("tr", {}, head.map((_, k) => h("td", { class: align[k] }, inline(row[k] || "", ctx)))));
  }
  out.push(h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, head.map((c, k) => h("th", { scope: "col", class: align[k] }, inline(c, ctx))))), body)));
  return i;
}

// Inline rules, each tried where the text stands (sticky). Emphasis looks at most a few
// hundred characters ahead, so no paragraph can make the renderer crawl.
const ESCAPE = /\\([!-/:-@[-`{-~])/y;
const BREAK = / {2,}\n|\\\n/y;
const CODE = /(`+)(?!`)([\s\S]{0,2000}?[^`])\1(?!`)/y;
const AUTOLINK = /<(https?:\/\/[^\s<>]+)>/y;
const BARE_URL = /https?:\/\/[^\s<]*[^\s<.,:;"'!?)\]*_]/y;
const STRONG = /(\*\*|__)(?=\S)([\s\S]{0,500}?\S)\1/y;
const EMPH = /([*_])(?=[^\s*_])([\s\S]{0,500}?[^\s\\])\1/y;
const STRIKE = /~~(?=\S)([\s\S]{0,500}?\S)~~/y;

function inline(src, ctx) {
  const out = [];
  let text = "";
  let i = 0;
  const flush = () => {
    if (text) out.push(document.createTextNode(text));
    text = "";
  };
  const at = (re) => {
    re.lastIndex = i;
    return re.exec(src);
  };
  const wordBefore = () => i > 0 && /[\p{L}\p{N}]/u.test(src[i - 1]);
  while (i < src.length) {
    const c = src[i];
    let m;
    if (c === "\\" && (m = at(ESCAPE))) {
      text += m[1];
    } else if ((c === " " || c === "\\") && (m = at(BREAK))) {
      flush();
      out.push(h("br"));
    } else if (c === "`" && (m = at(CODE))) {
      flush();
      const body = m[2];
      out.push(h("code", {}, /^ .* $/.test(body) ? body.slice(1, -1) : body));
    } else if (c === "<" && (m = at(AUTOLINK))) {
      flush();
      out.push(anchor(m[1], [m[1]], ctx));
    } else if (c === "h" && !wordBefore() && (m = at(BARE_URL))) {
      flush();
      out.push(anchor(m[0], [m[0]], ctx));
    } else if ((c === "[" || (c === "!" && src[i + 1] === "[")) && (m = linkAt(src, i))) {
      flush();
      const label = inline(m.label, ctx);
      // Images would load from wherever they point: shown as a link to them instead.
      out.push(anchor(m.href, c === "!" ? ["image: ", ...(label.length ? label : [m.href])] : label, ctx));
      i = m.end;
      continue;
    } else if ((c === "*" || c === "_") && !(c === "_" && wordBefore()) && (m = at(STRONG))) {
      flush();
      out.push(h("strong", {}, inline(m[2], ctx)));
    } else if ((c === "*" || c === "_") && !(c === "_" && wordBefore()) && (m = at(EMPH)) && !(c === "_" && /[\p{L}\p{N}]/u.test(src[i + m[0].length] || ""))) {
      flush();
      out.push(h("em", {}, inline(m[2], ctx)));
    } else if (c === "~" && (m = at(STRIKE))) {
      flush();
      out.push(h("del", {}, inline(m[1], ctx)));
    } else {
      text += c;
      i++;
      continue;
    }
    i += m[0].length;
  }
  flush();
  return out;
}

/** `[label](href "title")` (or `![…](…)`) starting at `i`: its label, target and end. */
function linkAt(src, i) {
  let j = src[i] === "!" ? i + 2 : i + 1;
  const start = j;
  let depth = 1;
  for (; j < src.length && j - start < 1000; j++) {
    if (src[j] === "\\") j++;
    else if (src[j] === "[") depth++;
    else if (src[j] === "]" && --depth === 0) break;
  }
  if (depth !== 0 || src[j + 1] !== "(") return null;
  const label = src.slice(start, j);
  const dest = /\(\s*(?:<([^<>\n]*)>|((?:[^\s()\\]|\\.|\([^\s()]*\))*))(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)/y;
  dest.lastIndex = j + 1;
  const m = dest.exec(src);
  if (!m) return null;
  return { label, href: (m[1] ?? m[2]).replace(/\\(.)/g, "$1"), end: j + 1 + m[0].length };
}

function anchor(href, children, ctx) {
  if (href.startsWith("#")) {
    const id = `md-${decodeURIComponentSafe(href.slice(1)).toLowerCase().replace(/[^\p{L}\p{N}]+/gu, "-").replace(/^-|-$/g, "")}`;
    return h("a", { href: `#${id}` }, children);
  }
  const target = ctx.link(href);
  if (!target) return h("span", { class: "unlinked", title: href }, children);
  return h("a", target.external ? { href: target.href, rel: "noopener noreferrer nofollow", class: "external" } : { href: target.href }, children);
}

function decodeURIComponentSafe(s) {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
