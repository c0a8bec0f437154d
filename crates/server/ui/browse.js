// Listings: the namespaces, the names of a namespace (each with its latest complete
// version), and the versions of a name — filtered by label, paged, and kept current by
// the event feed.

import { h, clear, header, ui, bytes, time, pool, badge, command } from "./dom.js";
import { api, v1, errorBox } from "./api.js";

/** Requests at once for the details of a page's rows; the feed keeps one more. */
const ROW_REQUESTS = 4;
const PAGE = 25;

export async function namespacesPage(main, _params, ctx) {
  header(main, "Namespaces");
  const list = h("ul", { class: "cards" });
  const more = h("button", { type: "button", hidden: true }, "More namespaces");
  main.append(list, more);
  let cursor = null;
  const load = async () => {
    const page = await api(v1.namespaces({ cursor, limit: "200" }), { signal: ctx.signal });
    for (const { name } of page.items) list.append(h("li", {}, h("a", { href: ui.namespace(name) }, name)));
    cursor = page.next_cursor;
    more.hidden = !cursor;
  };
  more.addEventListener("click", () => load().catch((e) => main.append(errorBox(e))));
  await load();
  if (!list.children.length) {
    main.append(h("p", {}, "Nothing to show yet: nothing is published, or nothing you may read. Publish with:"),
      command("publish a directory", "artifactstore put NAMESPACE/NAME@VERSION ./out --complete --label branch=main"));
  }
}

export async function namesPage(main, { ns }, ctx) {
  header(main, ns, [["Namespaces", ui.home()], [ns]]);
  const usage = h("p", { class: "muted" });
  const body = h("tbody");
  const table = h("table", {},
    h("caption", { class: "sr-only" }, `Names in ${ns}`),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Latest complete version"), h("th", { scope: "col" }, "Completed"))),
    body);
  const more = h("button", { type: "button", hidden: true }, "More names");
  main.append(usage, h("div", { class: "scroll" }, table), more);
  let cursor = null;
  const load = async () => {
    const page = await api(v1.names(ns, { cursor, limit: "100" }), { signal: ctx.signal });
    const u = page.usage;
    usage.textContent = `${u.versions} live version${u.versions === 1 ? "" : "s"}, ${bytes(u.bytes)}` +
      (u.max_bytes ? ` of ${bytes(u.max_bytes)}` : "") + (u.max_versions ? `, at most ${u.max_versions} versions` : "");
    const rows = page.items.map(({ name }) => {
      const latest = h("td", { class: "muted" }, "…");
      const when = h("td");
      body.append(h("tr", {}, h("th", { scope: "row" }, h("a", { href: ui.name(ns, name) }, name)), latest, when));
      return { name, latest, when };
    });
    cursor = page.next_cursor;
    more.hidden = !cursor;
    await pool(rows, ROW_REQUESTS, async ({ name, latest, when }) => {
      try {
        const m = await api(v1.version(ns, name, "latest", { limit: "1" }), { signal: ctx.signal });
        clear(latest).append(h("a", { href: ui.version(ns, name, m.version) }, m.version));
        latest.className = "";
        when.append(time(m.completed_at));
      } catch (e) {
        if (e.name === "AbortError") return;
        latest.textContent = e.code === "no_complete_version" ? "none complete yet" : e.message;
      }
    });
  };
  more.addEventListener("click", () => load().catch((e) => main.append(errorBox(e))));
  await load();
  if (!body.children.length) main.append(h("p", {}, "No names here that you may read."));
}

export async function versionsPage(main, { ns, name }, ctx) {
  const label = ctx.query.get("label") || "";
  const cursor = ctx.query.get("cursor") || "";
  header(main, name, [["Namespaces", ui.home()], [ns, ui.namespace(ns)], [name]]);

  const input = h("input", { id: "label-filter", name: "label", value: label, placeholder: "branch=main", autocomplete: "off" });
  const filter = h("form", { role: "search", class: "inline", "aria-label": "Filter versions" },
    h("label", { for: "label-filter" }, "Label"), input, h("button", { type: "submit" }, "Filter"),
    label ? h("a", { href: ui.name(ns, name) }, "Clear") : null);
  filter.addEventListener("submit", (e) => {
    e.preventDefault();
    ctx.navigate(ui.name(ns, name, { label: input.value.trim() }));
  });

  const selected = new Set();
  const compare = h("button", { type: "button", disabled: true }, "Compare selected");
  const hint = h("span", { class: "muted", id: "compare-hint" }, "Select two versions to compare their files.");
  compare.setAttribute("aria-describedby", "compare-hint");
  const body = h("tbody");
  const table = h("table", { class: "versions" },
    h("caption", { class: "sr-only" }, `Versions of ${ns}/${name}, newest first`),
    h("thead", {}, h("tr", {}, ["", "Version", "State", "Labels", "Files", "Size", "Created", "Completed"]
      .map((t) => h("th", { scope: "col" }, t ? t : h("span", { class: "sr-only" }, "Select"))))),
    body);
  const paging = h("nav", { class: "paging", "aria-label": "Pages of versions" });
  const announce = h("p", { class: "sr-only", role: "status" });
  main.append(filter, h("div", { class: "toolbar" }, compare, hint), h("div", { class: "scroll" }, table), paging, announce);

  compare.addEventListener("click", () => {
    // Rows are newest first: the lower row is the older version, compared from.
    const order = [...body.querySelectorAll("tr")].map((tr) => tr.dataset.version);
    const [to, from] = order.filter((v) => selected.has(v));
    ctx.navigate(ui.compare(ns, name, from, to));
  });
  const onSelect = (version, box) => {
    if (box.checked) selected.add(version);
    else selected.delete(version);
    if (selected.size > 2) {
      const first = [...selected][0];
      selected.delete(first);
      const other = body.querySelector(`tr[data-version="${CSS.escape(first)}"] input`);
      if (other) other.checked = false;
    }
    compare.disabled = selected.size !== 2;
  };

  let shown = null;
  const load = async () => {
    const page = await api(v1.versions(ns, name, { label, cursor, limit: String(PAGE) }), { signal: ctx.signal });
    const before = shown;
    shown = new Set(page.items.map((v) => v.version));
    clear(body);
    const rows = page.items.map((v) => {
      const box = h("input", { type: "checkbox", "aria-label": `Select ${v.version} to compare` });
      box.checked = selected.has(v.version);
      box.addEventListener("change", () => onSelect(v.version, box));
      const files = h("td", { class: "num muted" }, "…");
      const size = h("td", { class: "num" });
      const labels = Object.entries(v.labels || {}).map(([k, val]) =>
        h("a", { class: "chip", href: ui.name(ns, name, { label: `${k}=${val}` }), title: `Only versions labelled ${k}=${val}` }, `${k}=${val}`));
      const fresh = before && !before.has(v.version);
      body.append(h("tr", { "data-version": v.version, class: fresh ? "new" : null },
        h("td", {}, box),
        h("th", { scope: "row" }, h("a", { href: ui.version(ns, name, v.version) }, v.version)),
        h("td", {}, badge(v.state)), h("td", { class: "labels" }, labels), files, size,
        h("td", {}, time(v.created_at)), h("td", {}, time(v.completed_at))));
      return { v, files, size };
    });
    if (!rows.length) body.append(h("tr", {}, h("td", { colspan: "8", class: "muted" }, label ? `No version labelled ${label}.` : "No versions yet.")));
    if (before) {
      const added = page.items.filter((v) => !before.has(v.version)).map((v) => v.version);
      if (added.length) announce.textContent = `New: ${added.join(", ")}`;
    }
    clear(paging);
    if (cursor) paging.append(h("a", { href: ui.name(ns, name, { label }) }, "← Newest"));
    if (page.next_cursor) paging.append(h("a", { href: ui.name(ns, name, { label, cursor: page.next_cursor }), rel: "next" }, "Older →"));
    await pool(rows, ROW_REQUESTS, async ({ v, files, size }) => {
      try {
        const m = await api(v1.version(ns, name, v.version, { limit: "1" }), { signal: ctx.signal });
        files.textContent = m.file_count;
        files.className = "num";
        size.textContent = bytes(m.total_size);
      } catch (e) {
        if (e.name !== "AbortError") files.textContent = "?";
      }
    });
  };
  await load();

  // The first page follows the feed: a new run, a completion or a new file of this name
  // reloads it (once per burst: a run's events come together).
  if (!cursor) {
    let timer = null;
    ctx.onEvent((e) => {
      if (e.namespace !== ns || e.name !== name || timer) return;
      timer = setTimeout(() => {
        timer = null;
        load().catch((err) => err.name !== "AbortError" && main.append(errorBox(err)));
      }, 250);
    });
  }
}
