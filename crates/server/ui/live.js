// The event feed, followed by long-poll: the last events first (`tail`), then every
// event after them as it happens. Pages subscribe to it (a versions list shows a new run
// without a reload); the "Recent activity" panel shows the versions that came and went.

import { h, clear, time, ui } from "./dom.js";
import { api, v1 } from "./api.js";

const SHOWN = 12;
/** Seconds the server holds a request open when nothing happens (its cap is 60). */
const WAIT = 25;

const subscribers = new Set();
let feed = null;

export function onEvent(fn) {
  subscribers.add(fn);
  return () => subscribers.delete(fn);
}

/** (Re)starts following, e.g. after signing in or out: what may be read has changed. */
export function startFeed() {
  feed?.abort();
  feed = new AbortController();
  follow(feed.signal);
}

async function follow(signal) {
  const panel = document.getElementById("activity");
  const list = clear(document.getElementById("activity-list"));
  let after;
  try {
    const tail = await api(v1.events({ tail: "200" }), { signal });
    panel.hidden = false;
    for (const e of tail.events) show(list, e, false);
    if (!list.children.length) list.append(h("li", { class: "muted empty" }, "Nothing yet."));
    after = tail.next_after;
  } catch (e) {
    // Nothing this visitor may read, or the feed is unreachable: no panel.
    panel.hidden = true;
    if (e.name !== "AbortError" && e.status !== 401 && e.status !== 403) retryLater(signal, 5000);
    return;
  }
  let pause = 1000;
  while (!signal.aborted) {
    try {
      const page = await api(v1.events({ after: String(after), wait: String(WAIT) }), { signal });
      after = page.next_after;
      pause = 1000;
      for (const e of page.events) {
        show(list, e, true);
        for (const fn of subscribers) {
          try {
            fn(e);
          } catch (err) {
            console.error(err);
          }
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      // The server restarting, or the network gone: try again, less and less often.
      await sleep(pause, signal);
      pause = Math.min(pause * 2, 30_000);
    }
  }
}

function retryLater(signal, ms) {
  sleep(ms, signal).then(() => {
    if (!signal.aborted) follow(signal);
  });
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });
}

const WORDS = {
  "version.created": "new run",
  "version.completed": "completed",
  "version.deleted": "deleted",
  "version.expired": "expired",
};

/** Versions that began, completed or went, each once with what last happened to it;
 * single files are too many to list. */
function show(list, e, fresh) {
  const word = WORDS[e.type];
  if (!word) return;
  list.querySelector(".empty")?.remove();
  const key = `${e.namespace}/${e.name}@${e.version}`;
  for (const old of list.querySelectorAll("li[data-key]")) if (old.dataset.key === key) old.remove();
  const gone = e.type === "version.deleted" || e.type === "version.expired";
  const target = gone ? ui.name(e.namespace, e.name) : ui.version(e.namespace, e.name, e.version);
  const item = h("li", { class: fresh ? "fresh" : null, "data-key": key },
    h("a", { href: target }, `${e.namespace}/${e.name}@${e.version}`),
    " ", h("span", { class: `kind ${e.type.replace(".", "-")}` }, word),
    " ", time(e.at));
  list.prepend(item);
  while (list.children.length > SHOWN) list.lastElementChild.remove();
}
