/* nnserve playground, the shared parts: the API client (with the key a server may want, kept for this tab
   only), small DOM helpers, the tabs, and start-up from the model cards (GET /v1/models): every panel builds
   its model lists from the cards, so a new model appears without editing the page. */
"use strict";

const NN = (window.NN = { panels: [], models: [] });
const KEY = "nnserve-api-key";

NN.$ = (id) => document.getElementById(id);

/** An element with attributes ("text" sets its text, "class" its class) and children. */
NN.el = function (tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
};

NN.png = (b64) => "data:image/png;base64," + b64;
NN.pct = (p) => (100 * p).toFixed(p > 0.999 || p < 0.001 ? 2 : 1) + " %";
NN.num = (x) => (Number.isInteger(x) ? String(x) : Math.abs(x) >= 100 ? x.toFixed(1) : x.toPrecision(3));
NN.card = (name) => NN.models.find((m) => m.name === name);

/** fn, called once calls stop for ``ms``; ``.cancel()`` drops a pending call. */
NN.debounce = function (fn, ms) {
  let timer = 0;
  const later = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  later.cancel = () => clearTimeout(timer);
  return later;
};

/** Runs of an async function where only the latest one's answer is shown: a slow answer to an older drawing
    must not replace a newer one. ``run(fn)`` resolves to fn's value, or to NN.STALE if a newer run started or
    ``run.stale()`` was called since (the input was cleared: no answer in flight may be shown). fn is given
    ``current()``, true while its run is the latest, for a run that writes as it goes. ``region`` (the answer's
    element) is aria-busy while the latest run is in flight. */
NN.STALE = Symbol("stale");
NN.latest = function (region) {
  let n = 0;
  const run = async (fn) => {
    const mine = ++n;
    if (region) region.setAttribute("aria-busy", "true");
    try {
      const value = await fn(() => mine === n);
      return mine === n ? value : NN.STALE;
    } catch (err) {
      if (mine !== n) return NN.STALE; // an older run's failure: the newer answer stays on screen
      throw err;
    } finally {
      if (region && mine === n) region.setAttribute("aria-busy", "false");
    }
  };
  run.stale = () => {
    n += 1; // every run in flight is older now
    if (region) region.setAttribute("aria-busy", "false");
  };
  return run;
};

/** A pad's onchange for a panel: live while drawing (debounced), at once when a stroke ends. */
NN.live = function (run, error, clear = () => {}, ms = 200) {
  const later = NN.debounce(run, ms);
  return (final, err) => {
    if (err) {
      later.cancel();
      clear(); // the answer shown, and any in flight, was to another input
      return NN.fail(error, err);
    }
    if (!final) return later();
    later.cancel();
    run();
  };
};

/** Show an error (or hide the element when err is null). */
NN.fail = function (el, err) {
  el.hidden = err === null;
  el.textContent = err === null ? "" : String(err.message || err);
};

let asking = null; // one dialog at a time, however many requests were refused together

function askKey(wrong) {
  if (asking) return asking;
  asking = new Promise((resolve) => {
    const dialog = NN.$("key-dialog");
    const form = NN.$("key-form");
    const input = NN.$("key-input");
    NN.$("key-wrong").hidden = !wrong;
    input.value = "";
    const done = (key) => {
      form.removeEventListener("submit", submit);
      dialog.removeEventListener("cancel", cancel);
      if (dialog.open) dialog.close();
      asking = null;
      resolve(key);
    };
    const submit = (ev) => {
      ev.preventDefault();
      done(input.value.trim() || null);
    };
    const cancel = (ev) => {
      ev.preventDefault();
      done(null);
    };
    form.addEventListener("submit", submit);
    dialog.addEventListener("cancel", cancel);
    dialog.showModal();
    input.focus();
  });
  return asking;
}

/** A 429's or 503's Retry-After (seconds, or an HTTP date) in seconds, or null. */
function retryAfter(r) {
  const h = r.headers.get("retry-after");
  if (![429, 503].includes(r.status) || !h) return null;
  const s = /^\d+$/.test(h.trim()) ? Number(h) : (Date.parse(h) - Date.now()) / 1000;
  return Number.isFinite(s) ? Math.max(0, s) : null;
}

/** A request to a path relative to the page (``v1/...``) with the key, as any client sends it. A 401 asks for
    the API key once and retries; other failures throw the error envelope's message. */
async function request(path, init, accept) {
  for (;;) {
    const key = sessionStorage.getItem(KEY);
    const headers = { accept, ...init.headers };
    if (key) headers.authorization = "Bearer " + key;
    const r = await fetch(path, { ...init, headers });
    if (r.status === 401) {
      if (sessionStorage.getItem(KEY) !== key) continue; // another request was given a key meanwhile
      const given = await askKey(key !== null);
      if (given === null) throw Object.assign(new Error("This server wants an API key."), { status: 401 });
      sessionStorage.setItem(KEY, given);
      continue;
    }
    if (!r.ok) {
      const data = await r.json().catch(() => null);
      const err = data && data.error;
      const failure = new Error(`${r.status}: ${(err && (err.message || err)) || r.statusText}`);
      failure.status = r.status;
      failure.retryAfter = retryAfter(r); // seconds, or null
      throw failure;
    }
    return r;
  }
}

/** GET (no body) or POST a JSON body; resolves to the answer's JSON (an answer that is not JSON throws). */
NN.api = async function (path, body) {
  const init = {};
  if (body !== undefined) {
    Object.assign(init, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } });
  }
  const r = await request(path, init, "application/json");
  const data = await r.json().catch(() => undefined);
  if (data === undefined || data === null) throw new Error(`${r.status}: the server's answer was not JSON`);
  return data;
};

/** GET an image (a model's figure): an <img> cannot send the key, so it is fetched (revalidated with its ETag
    by the browser's cache) and shown from a blob: URL. */
NN.image = async function (path) {
  return URL.createObjectURL(await (await request(path, {}, "image/png")).blob());
};

/** Fill a <select> with models (their names), keeping the current choice, else ``preferred`` if served. */
NN.fill = function (select, models, preferred) {
  const keep = select.value || preferred;
  select.replaceChildren(...models.map((m) => NN.el("option", { value: m.name, text: m.name })));
  if (models.some((m) => m.name === keep)) select.value = keep;
};

/** A bar chart of probabilities as a list: label, bar, value (the bar is decoration; the text says it all). */
NN.bars = function (list, rows, best) {
  list.replaceChildren(
    ...rows.map(([label, p]) => {
      const fill = NN.el("span");
      fill.style.width = (100 * p).toFixed(1) + "%";
      return NN.el(
        "li",
        { class: label === best ? "best" : null },
        NN.el("span", { class: "bar-label", text: label }),
        NN.el("span", { class: "bar", "aria-hidden": "true" }, fill),
        NN.el("span", { class: "bar-value", text: NN.pct(p) }),
      );
    }),
  );
};

/** What each ood_reason (and anomaly_reason) means: contract/reasons.py's REASONS, which a test keeps equal. */
NN.REASONS = {
  nothing_written: "no pen strokes or object found: a blank or uniform page, or nothing standing out from it",
  several_characters: "two or more marks side by side, as a number's digits are (or a digit written in pieces that stand apart)",
  printed_text: "strokes as crowded as printed text",
  dot: "a single dot of the pen",
  scattered_marks: "marks scattered over a large area, as a scene's edges are, not pen strokes",
  textured_page: "ink or texture all over the page around the marks, not plain paper",
  vivid_colours: "colours more vivid than any paper: a scene, not a page",
  ink_colour: "dark marks of a colour no pen of black, blue or grey ink has",
  textured_backdrop: "a scene behind the object, not a plain backdrop",
  sparse_object: "the object covers little of its box, as print or scattered marks do",
  unlike_training_data: "the model's own score is above its threshold: unlike what it was trained on",
  no_known_word: "no word of meaning the model knows",
  unknown_words: "too many words the model does not know",
  rare_words: "words rare in its training texts, as another language's are",
};

/** Why an answer is flagged, in words. */
NN.why = (reason) => NN.REASONS[reason] || NN.REASONS.unlike_training_data;

/** The out-of-distribution flag of a prediction and why it is raised, as the model card defines it. A model
 * without an out-of-distribution score still flags what its front door finds nothing in or unlike any page. */
NN.ood = function (el, pred, card) {
  el.hidden = false;
  el.classList.toggle("warn", pred.out_of_distribution);
  const t = card.ood ? NN.num(card.ood.threshold) : "?";
  const s = pred.ood_score === null ? null : NN.num(pred.ood_score);
  if (pred.out_of_distribution) {
    const score = s === null ? "" : ` (score ${s}, threshold ${t})`;
    el.textContent = `Out of distribution${score}: ${NN.why(pred.ood_reason)}. The model was not trained on inputs like this one.`;
  } else {
    el.textContent = s === null ? `${card.name} has no out-of-distribution score.` : `In distribution: score ${s}, threshold ${t}.`;
  }
};

/** The headline of a classifier's answer: a flagged one says first that the model cannot vouch for it. */
NN.verdict = function (name, pred) {
  const guess = `${pred.label} (${NN.pct(pred.score)})`;
  return pred.out_of_distribution
    ? `${name} cannot vouch for this: it is unlike what it was trained on (its best guess: ${guess})`
    : `${name} reads ${guess}`;
};

/** A seeded generator of floats in [0, 1) (mulberry32): the same seed, the same noise. */
NN.rng = function (seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
};

/** Tabs: click, or arrow keys, Home and End within the tab list; the URL's #fragment names the open panel. */
function tabs() {
  const all = [...document.querySelectorAll('[role="tab"]')].filter((t) => !t.hidden);
  const select = (tab, focus) => {
    for (const t of all) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      NN.$(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
    history.replaceState(null, "", "#" + tab.id.slice(4));
  };
  for (const t of all) t.addEventListener("click", () => select(t, false));
  NN.$("tabs").addEventListener("keydown", (ev) => {
    const i = all.indexOf(document.activeElement);
    if (i < 0) return;
    const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: all.length - 1 }[ev.key];
    if (to === undefined) return;
    ev.preventDefault();
    select(all[(to + all.length) % all.length], true);
  });
  const wanted = all.find((t) => "#" + t.id.slice(4) === location.hash);
  if (all.length) select(wanted || all[0], false);
}

const RETRIES = 3; // automatic tries after a 429 or 503 that names its Retry-After
let retries = 0;
let retrying = 0; // the timer of the next automatic try

/** Start-up failed: the message, a button to try again (to enter the API key again after the dialog was
    dismissed), and for a busy server (429 or 503 with Retry-After) another try after that many seconds. */
function unread(status, err) {
  status.classList.add("error");
  const again = NN.el("button", { type: "button", text: err.status === 401 ? "Enter the API key" : "Retry" });
  again.addEventListener("click", start);
  let wait = "";
  if (err.retryAfter !== null && err.retryAfter !== undefined && retries < RETRIES) {
    const s = Math.min(120, Math.max(1, Math.ceil(err.retryAfter)));
    retries += 1;
    retrying = setTimeout(start, 1000 * s);
    wait = ` Trying again in ${s} s.`;
  }
  status.replaceChildren(`Could not read the model cards: ${err.message.replace(/\.$/, "")}.${wait} `, again);
}

async function start() {
  clearTimeout(retrying);
  const status = NN.$("status");
  status.classList.remove("error");
  status.textContent = "Reading the model cards…";
  let cards;
  try {
    cards = await NN.api("v1/models");
  } catch (err) {
    return unread(status, err);
  }
  try {
    const { models, unavailable } = cards;
    NN.models = models;
    const ready = models.filter((m) => m.ready);
    for (const panel of NN.panels) NN.$("tab-" + panel.id).hidden = !panel.init(ready, models);
    tabs();
    const left = Object.keys(unavailable || {}).length;
    status.textContent = `${ready.length} models ready` + (left ? `, ${left} unavailable.` : ".");
  } catch (err) {
    status.textContent = "Could not read the model cards: " + err.message; // a card the page cannot read
    status.classList.add("error");
  }
}

document.addEventListener("DOMContentLoaded", start);
