"""The review page: an HTML document, its style sheet and its script.

Three documents, not one: the page's Content-Security-Policy (``scones.review.app``) runs
only scripts and style sheets the review server sends as files of their own, so text an
uploader controls (a key, a reason) can never run as script or restyle the page, even if
it ever reached the HTML. The script writes such text with ``textContent`` and DOM
properties only, never as markup.
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
<small id="who"></small><small id="progress"></small></header>
<main>
  <ul id="queue" aria-label="images waiting for review"></ul>
  <section id="detail" aria-live="polite"><p class="empty">Loading the queue&hellip;</p></section>
</main>
<script src="{SCRIPT_URL}"></script>
</body></html>
"""

STYLE = """body { font-family: system-ui, sans-serif; margin: 0; color: #222; background: #f6f6f4; }
header { padding: .8rem 1.5rem; background: #2d3a4a; color: #fff; display: flex;
         align-items: baseline; gap: 1.5rem; }
header h1 { font-size: 1.2rem; margin: 0; }
header small { opacity: .8; }
main { display: grid; grid-template-columns: 340px minmax(0, 1fr); gap: 1.2rem;
       padding: 1.2rem 1.5rem; }
#queue { list-style: none; margin: 0; padding: 0; max-height: 80vh; overflow-y: auto; }
#queue li { display: flex; gap: .6rem; align-items: center; padding: .4rem;
            margin-bottom: .3rem; background: #fff; border-radius: .4rem;
            border: 2px solid transparent; cursor: pointer; }
#queue li.current { border-color: #2d6cdf; }
#queue li[data-state="done"] { opacity: .55; }
#queue li[data-state="conflict"] { background: #fbe3e3; }
#queue img { width: 48px; height: 48px; object-fit: contain; border-radius: .2rem; }
#detail img.small { image-rendering: pixelated; }
.meta { font-size: .8rem; line-height: 1.3; min-width: 0; overflow-wrap: anywhere; }
.badge { display: inline-block; padding: 0 .35rem; border-radius: .3rem; font-size: .75rem; }
.NEEDS_REVIEW { background: #fff1c2; } .ACCEPTED { background: #d9f2dd; }
.REVIEWED { background: #dbe7fb; }
#detail { background: #fff; border-radius: .6rem; padding: 1.2rem; }
#detail img { width: 256px; height: 256px; object-fit: contain; border-radius: .4rem;
              background: #eee; flex: none; }
#detail .row { display: flex; gap: 1.5rem; }
#detail dl { display: grid; grid-template-columns: auto 1fr; gap: .3rem .8rem; margin: 0; }
#detail dt { color: #666; } #detail dd { margin: 0; min-width: 0; overflow-wrap: anywhere; }
.answers { margin-top: 1.2rem; display: flex; gap: .6rem; }
.answers button { font-size: 1rem; padding: .6rem 1rem; border-radius: .4rem;
                  border: 1px solid #999; background: #fff; cursor: pointer; }
.answers button:hover { background: #eef3fd; }
.answers button:disabled { opacity: .45; cursor: not-allowed; }
kbd { border: 1px solid #aaa; border-bottom-width: 2px; border-radius: .25rem; padding: 0 .3rem;
      font-size: .8rem; background: #fafafa; }
#status { margin-top: 1rem; min-height: 1.4rem; }
#status.error { color: #b00020; }
.empty { padding: 2rem; color: #555; }
"""

SCRIPT = r""""use strict";
const state = { items: [], current: 0, keys: {}, expired: 0 };
const queue = document.getElementById("queue");
const detail = document.getElementById("detail");

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
// token (served beyond loopback) travels in its URL, since an <img> sends no headers.
function imageSource(item) {
  const token = new URLSearchParams(location.search).get("token");
  return item.image_url + (token ? "&token=" + encodeURIComponent(token) : "");
}
// At most two images are fetched at once, the one being looked at first: a browser keeps
// six connections to a host, and images drawn from 25-megapixel uploads take a while, so
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

function renderQueue() {
  inView.disconnect();
  queue.replaceChildren();
  state.items.forEach((item, i) => {
    const li = document.createElement("li");
    li.dataset.recordId = item.record_id;
    li.dataset.state = item.state || "open";
    if (i === state.current) li.classList.add("current");
    const img = document.createElement("img");
    img.decoding = "async"; img.dataset.index = String(i);
    watch(img, item);
    img.alt = name(item);
    inView.observe(img);
    const meta = document.createElement("div"); meta.className = "meta";
    meta.append(text("b", name(item)), document.createElement("br"),
      text("span", item.review_label ? "reviewed: " + item.review_label
                                      : item.label + " " + item.confidence.toFixed(3)),
      document.createElement("br"),
      text("span", item.review_label ? "REVIEWED" : item.status,
           "badge " + (item.review_label ? "REVIEWED" : item.status)));
    li.append(img, meta);
    li.addEventListener("click", () => { state.current = i; render(); });
    queue.append(li);
  });
  const done = state.items.filter(it => it.state === "done").length;
  document.getElementById("progress").textContent =
    done + " of " + state.items.length + " answered" +
    (state.expired ? " \u00b7 " + state.expired + (state.expired >= state.expiredCap ? "+" : "") +
     " older ones cannot be shown: their uploads have expired (UploadRetentionDays)" : "");
}

function renderDetail() {
  const item = state.items[state.current];
  detail.replaceChildren();
  if (!item) {
    detail.append(text("p", "Nothing waits for review.", "empty"));
    return;
  }
  const row = document.createElement("div"); row.className = "row";
  const img = document.createElement("img");
  img.id = "current-image"; watch(img, item);
  img.alt = item.shown_key;
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
    const button = document.createElement("button");
    button.dataset.answer = answer;
    button.append(text("span", answer + " "), text("kbd", key));
    button.addEventListener("click", () => submit(answer));
    button.disabled = item.image !== "shown" || item.state === "done";
    answers.append(button);
  }
  const help = text("p", "Keys: " + Object.entries(state.keys)
    .map(([key, answer]) => key + " " + answer).join(", ") + "; arrows move.", "meta");
  const unseen = item.image === "failed" && item.state !== "done";
  const status = text("div", unseen ? UNSEEN + (item.imageError ? " (" + item.imageError + ")" : "")
                                    : item.message || "",
                      item.state === "conflict" || unseen ? "error" : "");
  status.id = "status";
  detail.append(row, answers, help, status);
  fetchImage(img, item, true);  // once in the page: a detached image is one re-rendered away
}

function render() {
  renderQueue(); renderDetail();
  // Keyboard moves keep the current row in view.
  const current = queue.querySelector("li.current");
  if (current) current.scrollIntoView({ block: "nearest" });
}

// Served beyond loopback, the printed URL carries the API's token (?token=...).
function tokenHeaders() {
  const token = new URLSearchParams(location.search).get("token");
  return token ? { "X-Review-Token": token } : {};
}

function setStatus(message, error) {
  const el = document.getElementById("status");
  if (el) { el.textContent = message; el.className = error ? "error" : ""; }
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
      setStatus("saved: " + name(item) + " is " + answer);
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

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key.toLowerCase();
  const step = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 }[event.key];
  // A held key repeats: one press is one answer, never a run through the queue.
  if (state.keys[key]) { event.preventDefault(); if (!event.repeat) submit(state.keys[key]); }
  else if (step) { event.preventDefault(); move(step); }
});

async function load() {
  const response = await fetch("api/queue", { headers: tokenHeaders() });
  const body = await readJson(response);
  if (!response.ok) {
    detail.replaceChildren(text("p", body.detail || response.statusText, "empty"));
    return;
  }
  state.items = body.items; state.current = 0; state.keys = keysFor(body.answers);
  state.expired = body.expired || 0; state.expiredCap = body.expired_cap || Infinity;
  document.getElementById("who").textContent =
    "reviewer " + body.reviewer + " \u00b7 " + body.table;
  document.body.dataset.loaded = "true";
  render();
}
load();
"""
