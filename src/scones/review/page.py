"""The review page: an HTML document, its style sheet and its script.

Three documents, not one: the page's Content-Security-Policy (``scones.review.app``) runs
only scripts and style sheets the review server sends as files of their own, so text an
uploader controls (a key, a reason) can never run as script or restyle the page, even if
it ever reached the HTML. The script writes such text with ``textContent`` and DOM
properties only, never as markup.

A reviewer works here for hours, by mouse, keyboard or screen reader: every control is a
real button or input reached by Tab with a drawn focus, redrawing keeps the focus where
it was, what happens is said in a live region, and a zoomed window reflows to one column
(``tests/review/test_review_page_a11y.py`` checks each in a browser).
"""

from __future__ import annotations

# Where the page asks for them (relative, as the page's own requests); served beside it.
STYLE_URL = "static/review.css"
SCRIPT_URL = "static/review.js"

PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Scones Unlimited review</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="{STYLE_URL}">
</head>
<body>
<header><h1>Scones Unlimited &middot; review</h1>
<small id="who"></small><small id="progress"></small>
<label class="switch"><input type="checkbox" id="shortcuts" checked> single-key shortcuts</label>
</header>
<main>
  <section aria-labelledby="queue-heading">
    <h2 id="queue-heading" class="visually-hidden">Queue</h2>
    <ul id="queue" aria-label="images waiting for review"></ul>
  </section>
  <section id="detail" tabindex="-1" aria-labelledby="detail-heading">
    <h2 id="detail-heading" class="visually-hidden">Image under review</h2>
    <div id="record"><p class="empty">Loading the queue&hellip;</p></div>
    <p id="status" role="status"></p>
  </section>
</main>
<script src="{SCRIPT_URL}"></script>
</body></html>
"""

STYLE = """body { font-family: system-ui, sans-serif; margin: 0; color: #222; background: #f6f6f4; }
/* Where the focus is, on every control: 3px, 6:1 on the page's light backgrounds. */
:focus-visible { outline: 3px solid #1a56c4; outline-offset: 2px; }
header :focus-visible { outline-color: #fff; }
/* Named for a screen reader, not drawn. */
.visually-hidden { position: absolute; width: 1px; height: 1px; margin: -1px; padding: 0;
                   overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0; }
header { padding: .8rem 1.5rem; background: #2d3a4a; color: #fff; display: flex;
         flex-wrap: wrap; align-items: baseline; gap: .4rem 1.5rem; }
header h1 { font-size: 1.2rem; margin: 0; }
header small { opacity: .8; min-width: 0; overflow-wrap: anywhere; }
header .switch { margin-left: auto; font-size: .9rem; }
header .switch input { width: 1.1rem; height: 1.1rem; vertical-align: middle; }
main { display: grid; grid-template-columns: 340px minmax(0, 1fr); gap: 1.2rem;
       padding: 1.2rem 1.5rem; }
#queue { list-style: none; margin: 0; padding: 0; max-height: 80vh; overflow-y: auto; }
#queue li { margin-bottom: .3rem; background: #fff; border-radius: .4rem;
            border: 2px solid transparent; }
#queue li button { display: flex; gap: .6rem; align-items: center; width: 100%;
                   padding: .4rem; border: 0; border-radius: .3rem; background: none;
                   color: inherit; font: inherit; text-align: left; cursor: pointer; }
/* Inside the row: the list scrolls, and would cut an outline drawn around it. */
#queue li button:focus-visible { outline-offset: -3px; }
#queue li.current { border-color: #2d6cdf; }
/* An answered row is set apart by its background and a faded image, never faded text. */
#queue li[data-state="done"] { background: #ebeae6; }
#queue li[data-state="done"] img { opacity: .55; }
#queue li[data-state="conflict"] { background: #fbe3e3; }
#queue img { width: 48px; height: 48px; object-fit: contain; border-radius: .2rem; flex: none; }
#detail img.small { image-rendering: pixelated; }
.meta { font-size: .8rem; line-height: 1.3; min-width: 0; overflow-wrap: anywhere; }
.meta > b, .meta > span { display: block; }
.badge { display: inline-block; padding: 0 .35rem; border-radius: .3rem; font-size: .75rem; }
.NEEDS_REVIEW { background: #fff1c2; } .ACCEPTED { background: #d9f2dd; }
.REVIEWED { background: #dbe7fb; } .CONFLICT { background: #fff; }
#detail { background: #fff; border-radius: .6rem; padding: 1.2rem; min-width: 0; }
#detail img { width: 256px; height: 256px; max-width: 100%; object-fit: contain;
              border-radius: .4rem; background: #eee; flex: none; }
#detail .row { display: flex; flex-wrap: wrap; gap: 1.5rem; }
#detail dl { display: grid; grid-template-columns: auto 1fr; gap: .3rem .8rem; margin: 0;
             flex: 1 1 14rem; min-width: 0; }
#detail dt { color: #666; } #detail dd { margin: 0; min-width: 0; overflow-wrap: anywhere; }
.answers { margin-top: 1.2rem; display: flex; flex-wrap: wrap; gap: .6rem; }
.answers button { font-size: 1rem; padding: .6rem 1rem; border-radius: .4rem;
                  border: 1px solid #767676; background: #fff; color: #222; cursor: pointer; }
.answers button:hover { background: #eef3fd; }
.answers button:disabled { opacity: .45; cursor: not-allowed; }
kbd { border: 1px solid #aaa; border-bottom-width: 2px; border-radius: .25rem; padding: 0 .3rem;
      font-size: .8rem; background: #fafafa; }
#status { margin: 1rem 0 0; min-height: 1.4rem; overflow-wrap: anywhere; }
#status.error { color: #b00020; }
.empty { padding: 2rem; color: #555; }
/* A narrow window, or a wide one zoomed in (200%, 400%): one column, nothing sideways. */
@media (max-width: 50rem) {
  main { grid-template-columns: minmax(0, 1fr); padding: .8rem; }
  header { padding: .8rem; }
  #queue { max-height: 40vh; }
}
"""

SCRIPT = r""""use strict";
const state = { items: [], current: 0, keys: {}, expired: 0, unreadable: [], more: false,
                said: null, drawn: null };
const queue = document.getElementById("queue");
const detail = document.getElementById("detail");
const record = document.getElementById("record");
// The live region: what was saved, refused or cannot be shown is read out as it happens.
const statusLine = document.getElementById("status");
// Single-key shortcuts can be turned off (WCAG 2.1.4: speech input types letters); the
// choice is kept for the next visit.
const shortcuts = document.getElementById("shortcuts");
const SHORTCUTS_KEPT = "scones-review-shortcuts";
try { shortcuts.checked = localStorage.getItem(SHORTCUTS_KEPT) !== "off"; } catch (err) {}
shortcuts.addEventListener("change", () => {
  try { localStorage.setItem(SHORTCUTS_KEPT, shortcuts.checked ? "on" : "off"); } catch (err) {}
  // The buttons and the help line name the keys only while they work.
  if (document.body.dataset.loaded) renderDetail();
});

// A key per answer the stack accepts: its first letter, or its position if taken.
function keysFor(answers) {
  const keys = {};
  answers.forEach((answer, i) => {
    const first = answer.charAt(0).toLowerCase();
    keys[/[a-z]/.test(first) && !(first in keys) ? first : String(i + 1)] = answer;
  });
  return keys;
}
// The server's JSON, or its status line when it sent none (a proxy's error page).
async function readJson(response) {
  try { return await response.json(); }
  catch (err) { return { detail: response.status + " " + response.statusText }; }
}

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (cls) el.className = cls;
  return el;
}
function when(value) {
  if (!value) return "-";
  const d = new Date(value);
  return isNaN(d) ? value : d.toLocaleString();
}
function name(item) { return item.shown_key.split("/").pop(); }

// An answer is taken only for an image the reviewer can see: one of the item's images
// loaded. A deleted or expired upload never loads, and answering it would label an
// image nobody looked at.
const UNSEEN = "the image could not be loaded (the upload was deleted, has expired or " +
  "could not be read), so it cannot be answered here";
// The review server reads each image and sends a PNG of at most 256 pixels a side; the
// API's token travels in its URL, since an <img> sends no headers.
function imageSource(item) {
  const token = new URLSearchParams(location.search).get("token");
  return item.image_url + (token ? "&token=" + encodeURIComponent(token) : "");
}
// At most two images are fetched at once, the one being looked at first: a browser keeps
// six connections to a host, and images drawn from 50-megapixel uploads take a while, so
// the rest stay free for the queue and the answers. Queue rows ask only once in view.
const loader = { active: 0, waiting: [] };
const IMAGES_AT_ONCE = 2;
function enqueue(job, first) {
  if (first) loader.waiting.unshift(job); else loader.waiting.push(job);
  pump();
}
function pump() {
  while (loader.active < IMAGES_AT_ONCE && loader.waiting.length) {
    const job = loader.waiting.shift();
    if (job.img && !job.img.isConnected) continue;  // re-rendered since: its successor asks
    loader.active++;
    let finished = false;
    job.start(() => { if (!finished) { finished = true; loader.active--; pump(); } });
  }
}
function fetchImage(img, item, first) {
  // A failed image is asked for once; reloading the page tries again.
  if (item.image === "failed") return;
  const src = imageSource(item);
  img.dataset.src = src;
  enqueue({ img, first, start(done) {
    // The row and the detail may both want one image: one request at a time per image.
    // The others wait for it, then take the copy the page holds, or nothing if it failed.
    if (item.image === "failed") { done(); return; }
    if (item.loading) { item.loading.push(this); done(); return; }
    item.loading = [];
    let settled = false;
    const settle = () => {
      if (settled) return;
      settled = true;
      const waiting = item.loading; item.loading = null;
      done();
      for (const job of waiting) enqueue(job, job.first);
    };
    img.addEventListener("load", settle, { once: true });
    img.addEventListener("error", settle, { once: true });
    img.src = src;
  } }, first);
}
// An <img> hides the server's reason: it is asked for once, within the same two slots.
function askReason(item, src) {
  enqueue({ start(done) {
    fetch(src)
      .then(async (response) => {
        if (!response.ok) item.imageError = (await readJson(response)).detail;
      })
      .catch((err) => { item.imageError = String(err); })
      .finally(() => {
        done();
        if (item === state.items[state.current]) renderDetail();
      });
  } }, false);
}
const inView = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    inView.unobserve(entry.target);
    fetchImage(entry.target, state.items[Number(entry.target.dataset.index)], false);
  }
}, { root: queue });
function watch(img, item) {
  img.addEventListener("load", () => {
    // A thumbnail-sized upload (CIFAR's 32x32) is enlarged as pixels, not blurred.
    img.classList.toggle("small", img.naturalWidth < 128 && img.naturalHeight < 128);
    if (item.image === "shown") return;
    item.image = "shown";
    if (item === state.items[state.current]) renderDetail();
  });
  img.addEventListener("error", () => {
    if (item.image) return;
    item.image = "failed";
    if (item === state.items[state.current]) renderDetail();
    askReason(item, img.dataset.src);
  });
}

// Each row is a button; only the current one is a Tab stop (the arrows move along the
// queue), so Tab goes from the queue to the answers in one step, not one per image.
function drawQueue() {
  inView.disconnect();
  queue.replaceChildren();
  state.items.forEach((item, i) => {
    const li = document.createElement("li");
    li.dataset.recordId = item.record_id;
    li.dataset.state = item.state || "open";
    const row = document.createElement("button");
    row.type = "button"; row.dataset.focus = "row";
    row.tabIndex = i === state.current ? 0 : -1;
    if (i === state.current) {
      li.classList.add("current");
      row.setAttribute("aria-current", "true");
    }
    const img = document.createElement("img");
    img.decoding = "async"; img.dataset.index = String(i);
    watch(img, item);
    img.alt = "";  // the row's text names the image
    inView.observe(img);
    const badge = item.review_label ? "REVIEWED" : item.state === "conflict" ? "CONFLICT"
                                                                             : item.status;
    const meta = document.createElement("span"); meta.className = "meta";
    const line = document.createElement("span");
    line.append(text("span", badge, "badge " + badge));
    meta.append(text("b", name(item)),
      text("span", item.review_label ? "reviewed: " + item.review_label
                                      : item.label + " " + item.confidence.toFixed(3)),
      line);
    row.append(img, meta);
    row.addEventListener("click", () => { state.current = i; render(); });
    li.append(row);
    queue.append(li);
  });
  const done = state.items.filter(it => it.state === "done").length;
  document.getElementById("progress").textContent =
    done + " of " + state.items.length + " answered" +
    (state.more ? " \u00b7 more images wait than this page shows: answer these, then " +
     "reload for the next ones" : "") +
    (state.expired ? " \u00b7 " + state.expired + (state.expired >= state.expiredCap ? "+" : "") +
     " older ones cannot be shown: their uploads have expired (UploadRetentionDays)" : "") +
    (state.unreadable.length ? " \u00b7 " + state.unreadable.length +
     " unreadable record(s) left out, not as the stack writes them: " +
     state.unreadable.map(u => u.pk + " (" + u.problems.join("; ") + ")").join(", ") : "");
}

function drawDetail() {
  const item = state.items[state.current];
  record.replaceChildren();
  state.drawn = item;  // the image whose answers the buttons give
  if (!item) {
    say(null, "Nothing waits for review.");
    return;
  }
  const row = document.createElement("div"); row.className = "row";
  const img = document.createElement("img");
  img.id = "current-image"; watch(img, item);
  img.alt = item.shown_key;  // text, as everywhere: the key is the uploader's
  const dl = document.createElement("dl");
  const probs = Object.entries(item.probabilities)
    .map(([k, v]) => k + " " + v.toFixed(3)).join(", ");
  for (const [k, v] of [["image", item.shown_key], ["prediction", item.label],
                        ["confidence", item.confidence.toFixed(3)], ["probabilities", probs],
                        ["uploaded", when(item.event_time)],
                        ["status", item.status + (item.sampled ? " (sampled)" : "")]]) {
    dl.append(text("dt", k), text("dd", v));
  }
  row.append(img, dl);
  const answers = document.createElement("div"); answers.className = "answers";
  for (const [key, answer] of Object.entries(state.keys)) {
    // Named by its answer alone; its key is its shortcut, not part of its name.
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.answer = answer; button.dataset.focus = "answer:" + answer;
    button.append(text("span", answer));
    if (shortcuts.checked) {
      const hint = text("kbd", key);
      hint.setAttribute("aria-hidden", "true");
      button.append(" ", hint);
      button.setAttribute("aria-keyshortcuts", key);
    }
    button.addEventListener("click", () => submit(answer));
    button.disabled = item.image !== "shown" || item.state === "done";
    answers.append(button);
  }
  const help = text("p", (shortcuts.checked ? "Keys: " + Object.entries(state.keys)
    .map(([key, answer]) => key + " " + answer).join(", ") : "Single-key shortcuts are off") +
    "; arrows move.", "meta");
  record.append(row, answers, help);
  const unseen = item.image === "failed" && item.state !== "done";
  say(item, unseen ? UNSEEN + (item.imageError ? " (" + item.imageError + ")" : "")
                   : item.message || "",
      item.state === "conflict" || unseen);
  fetchImage(img, item, true);  // once in the page: a detached image is one re-rendered away
}

// Drawing again replaces the rows and the buttons. A reviewer working by keyboard keeps
// their place: on the current row if they were in the queue, on the same answer if the
// image is the same and it can still be given, else on the image's section (never on an
// answer for the next image: a held Enter would answer it too).
function keepingFocus(draw) {
  const had = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.focus : undefined;
  const shown = state.drawn;
  draw();
  if (!had || (document.activeElement && document.activeElement !== document.body)) return;
  let target = had === "row" ? queue.querySelector("li.current button") : null;
  if (had !== "row" && shown === state.drawn) {
    target = Array.from(record.querySelectorAll("button")).find(b => b.dataset.focus === had);
  }
  (target && !target.disabled ? target : detail).focus();
}

function renderDetail() { keepingFocus(drawDetail); }

function render() {
  keepingFocus(() => { drawQueue(); drawDetail(); });
  // Keyboard moves keep the current row in view.
  const current = queue.querySelector("li.current");
  if (current) current.scrollIntoView({ block: "nearest" });
}

// The printed URL carries the API's token (?token=...); without it the API answers 401,
// and the page says where to open it from.
function tokenHeaders() {
  const token = new URLSearchParams(location.search).get("token");
  return token ? { "X-Review-Token": token } : {};
}

function setStatus(message, error) {
  // Unchanged text is not written again: a screen reader would read it out again.
  if (statusLine.textContent !== message) statusLine.textContent = message;
  statusLine.className = error ? "error" : "";
}
// What an image's own state says (why it cannot be shown, its answer, a conflict): said
// when it changes or the page moves to another image, not on every drawing (an image
// loading must not wipe out "saved").
function say(item, message, error) {
  const said = (item ? item.record_id : "") + "\n" + message + "\n" + Boolean(error);
  if (state.said === said) return;
  state.said = said;
  setStatus(message, error);
}

function move(step) {
  if (!state.items.length) return;
  state.current = Math.min(state.items.length - 1, Math.max(0, state.current + step));
  render();
}

async function submit(answer) {
  const item = state.items[state.current];
  if (!item || item.state === "done" || item.busy) return;
  if (item.image !== "shown") {
    setStatus(item.image === "failed" ? UNSEEN : "the image is still loading; answer once it shows",
              true);
    return;
  }
  item.busy = true;
  setStatus("saving " + answer + "...");
  try {
    const response = await fetch("api/answers", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...tokenHeaders() },
      body: JSON.stringify({ record_id: item.record_id, expected_status: item.status, answer }),
    });
    const body = await readJson(response);
    if (response.ok) {
      item.state = "done"; item.review_label = answer;
      item.message = "reviewed as " + answer;
      const next = state.items.findIndex((it, i) => i > state.current && it.state !== "done");
      if (next >= 0) state.current = next;
      render();
      const all = state.items.every(it => it.state === "done");
      setStatus("saved: " + name(item) + " is " + answer +
                (all ? "; every image in the queue is answered (reload for newer ones)" : ""));
    } else {
      item.message = body.detail || response.statusText;
      if (response.status === 409) item.state = "conflict";
      render();
      setStatus(item.message, true);
    }
  } catch (err) {
    setStatus("could not save: " + err, true);
  } finally {
    item.busy = false;
  }
}

// Keys typed into a field are its text (a checkbox or a button takes no text).
const UNTYPED = new Set(["checkbox", "radio", "button", "submit", "reset", "image", "range",
                         "color", "file"]);
function typing(target) {
  if (!(target instanceof Element)) return false;
  if (target.isContentEditable || target.tagName === "TEXTAREA" || target.tagName === "SELECT")
    return true;
  return target.tagName === "INPUT" && !UNTYPED.has(target.type);
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
  const key = event.key.toLowerCase();
  const step = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 }[event.key];
  // A held key repeats: one press is one answer, never a run through the queue.
  if (shortcuts.checked && Object.hasOwn(state.keys, key)) {
    event.preventDefault();
    if (!event.repeat) submit(state.keys[key]);
  }
  else if (step) { event.preventDefault(); move(step); }
});

async function load() {
  let response, body;
  try {
    response = await fetch("api/queue", { headers: tokenHeaders() });
    body = await readJson(response);
  } catch (err) {
    record.replaceChildren();
    setStatus("could not read the queue: " + err, true);
    return;
  }
  if (!response.ok) {
    record.replaceChildren();
    setStatus(body.detail || response.statusText, true);
    return;
  }
  state.items = body.items; state.current = 0; state.keys = keysFor(body.answers);
  state.expired = body.expired || 0; state.expiredCap = body.expired_cap || Infinity;
  state.unreadable = body.unreadable || []; state.more = body.more === true;
  document.getElementById("who").textContent =
    "reviewer " + body.reviewer + " \u00b7 " + body.table;
  document.body.dataset.loaded = "true";
  render();
  // The queue as it stands; drawing accepted records into it failed (the next load draws).
  if (body.sampling_error) setStatus(body.sampling_error, true);
}
load();
"""
