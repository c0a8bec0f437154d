// Two versions of a name side by side: the files added, removed and changed (by
// digest: same path, other bytes).

import { h, header, ui, bytes, digest } from "./dom.js";
import { api, v1, manifestWithAllFiles } from "./api.js";

export async function comparePage(main, { ns, name }, ctx) {
  const from = ctx.query.get("from") || "";
  const to = ctx.query.get("to") || "";
  header(main, `Compare ${name}`, [["Namespaces", ui.home()], [ns, ui.namespace(ns)], [name, ui.name(ns, name)], ["Compare"]]);

  const page = await api(v1.versions(ns, name, { limit: "100" }), { signal: ctx.signal });
  const list = h("datalist", { id: "known-versions" }, page.items.map((v) => h("option", { value: v.version })));
  const input = (id, label, value) => [
    h("label", { for: id }, label),
    h("input", { id, name: id, value, list: "known-versions", required: true, autocomplete: "off" }),
  ];
  const form = h("form", { class: "inline", "aria-label": "Versions to compare" },
    input("from", "From", from), input("to", "To", to), h("button", { type: "submit" }, "Compare"), list);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    ctx.navigate(ui.compare(ns, name, form.elements.from.value.trim(), form.elements.to.value.trim()));
  });
  main.append(form);
  if (!from || !to) return;

  const [a, b] = await Promise.all([
    manifestWithAllFiles(ns, name, from, ctx.signal),
    manifestWithAllFiles(ns, name, to, ctx.signal),
  ]);
  const d = diff(a.files, b.files);
  main.append(h("p", { class: "summary", role: "status" },
    `${a.version} → ${b.version}: `,
    h("strong", {}, `${d.added.length} added`), ", ",
    h("strong", {}, `${d.removed.length} removed`), ", ",
    h("strong", {}, `${d.changed.length} changed`), `, ${d.same} unchanged.`,
    ` Total size ${bytes(a.total_size)} → ${bytes(b.total_size)}.`));

  const link = (m, f) => h("a", { href: ui.file(ns, name, m.version, f.path) }, f.path);
  main.append(
    section("added", "Added", d.added, ["Path", "Size", "Digest"], (f) => [link(b, f), bytes(f.size), digest(f.digest)]),
    section("removed", "Removed", d.removed, ["Path", "Size", "Digest"], (f) => [link(a, f), bytes(f.size), digest(f.digest)]),
    section("changed", "Changed", d.changed, ["Path", "Size", "Digest"], ([x, y]) => [
      h("span", {}, link(b, y), " ", h("a", { href: ui.file(ns, name, a.version, x.path), class: "muted" }, "(before)")),
      `${bytes(x.size)} → ${bytes(y.size)}`,
      h("span", {}, digest(x.digest), " → ", digest(y.digest)),
    ]));
}

/** Files of `b` against those of `a`, by path. */
export function diff(a, b) {
  const before = new Map(a.map((f) => [f.path, f]));
  const after = new Map(b.map((f) => [f.path, f]));
  const added = b.filter((f) => !before.has(f.path));
  const removed = a.filter((f) => !after.has(f.path));
  const changed = [];
  let same = 0;
  for (const f of b) {
    const old = before.get(f.path);
    if (!old) continue;
    if (old.digest === f.digest) same++;
    else changed.push([old, f]);
  }
  return { added, removed, changed, same };
}

function section(id, title, items, columns, cells) {
  const heading = h("h2", { id: `${id}-title` }, `${title} (${items.length})`);
  if (!items.length) return h("section", { "aria-labelledby": heading.id, class: id }, heading, h("p", { class: "muted" }, "None."));
  return h("section", { "aria-labelledby": heading.id, class: id }, heading,
    h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, items.map((item) => {
        const [first, ...rest] = cells(item);
        return h("tr", {}, h("th", { scope: "row" }, first), rest.map((c) => h("td", {}, c)));
      })))));
}
