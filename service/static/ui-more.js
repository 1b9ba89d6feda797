/* The playground's generative and memory panels and the model cards: generate with a seed (POST
   /v1/generate), walk the latent space between two seeds (POST /v1/interpolate) as an animation, recall a
   corrupted pattern sweep by sweep (POST /v1/recall with max_sweeps 1, 2, ...), run an RBM's Gibbs chains
   for more and more steps (POST /v1/generate with steps), and every model's card (GET /v1/models) with its figures. */
"use strict";

/** Submit handler for a form: validate, then run fn, showing its failure in ``error``. */
NN.onsubmit = function (form, error, fn) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!form.reportValidity()) return;
    NN.fail(error, null);
    try {
      await fn();
    } catch (err) {
      NN.fail(error, err);
    }
  });
};

NN.panels.push({
  id: "generate",
  init(models) {
    const mine = models.filter((m) => m.task === "generator");
    if (!mine.length) return false;
    const select = NN.$("generate-model");
    const [cls, seed, n, steps] = ["class", "seed", "n", "steps"].map((k) => NN.$("generate-" + k));
    NN.fill(select, mine, "mnist-gan");
    const latest = NN.latest();
    const options = () => {
      const card = NN.card(select.value);
      const g = card.generator;
      NN.$("generate-class-row").hidden = !g.conditional;
      const every = NN.el("option", { value: "", text: "every class in turn" });
      cls.replaceChildren(every, ...card.labels.map((l, i) => NN.el("option", { value: String(i), text: l })));
      NN.$("generate-steps-row").hidden = !g.gibbs;
      NN.$("walk").hidden = Boolean(g.gibbs);
    };
    const generate = async () => {
      const card = NN.card(select.value);
      const body = { model: card.name, seed: Number(seed.value), n: Number(n.value) };
      if (card.generator.conditional && cls.value !== "") body.label = Number(cls.value);
      if (card.generator.gibbs) body.steps = Number(steps.value);
      NN.$("generate-caption").textContent = "Generating…";
      const r = await latest(() => NN.api("v1/generate", body)).catch((err) => {
        NN.$("generate-caption").textContent = "";
        NN.$("generate-samples").replaceChildren(); // uncaptioned, they would pass for this request's
        throw err;
      });
      if (r === NN.STALE) return;
      NN.$("generate-samples").replaceChildren(
        ...r.samples.map((s, i) => {
          const what = r.labels ? `, class ${r.labels[i]}` : "";
          return NN.el("img", { src: NN.png(s), width: 56, height: 56, alt: `Sample ${i + 1} of ${r.model}${what}` });
        }),
      );
      NN.$("generate-caption").textContent =
        `${r.samples.length} samples from ${r.model} (version ${r.version}), seed ${r.seed}` +
        (r.steps ? `, ${r.steps} Gibbs steps` : "") +
        ": the same seed gives the same pictures.";
    };
    NN.onsubmit(NN.$("generate-form"), NN.$("generate-error"), generate);
    NN.$("generate-random").addEventListener("click", () => {
      seed.value = Math.floor(Math.random() * 2 ** 31);
      NN.$("generate-form").requestSubmit();
    });
    select.addEventListener("change", () => {
      options();
      NN.$("generate-samples").replaceChildren(); // they were another model's
      NN.$("generate-caption").textContent = "";
      NN.$("walk-player").hidden = true;
    });
    options();
    walk(select, cls);
    return true;
  },
});

/** The latent walk: /v1/interpolate's frames from seed a to seed b, played back and forth. */
function walk(select, cls) {
  const [img, play, pos, out] = ["frame", "play", "pos", "pos-out"].map((k) => NN.$("walk-" + k));
  let frames = [];
  let ends = []; // the seeds the frames were made from, as the answer names them
  let timer = 0;
  let at = 0;
  let step = 1;
  const show = (i) => {
    at = i;
    img.src = frames[i];
    img.alt = `Frame ${i + 1} of ${frames.length}, from seed ${ends[0]} to seed ${ends[1]}`;
    pos.value = i;
    out.value = `${i + 1} / ${frames.length}`;
  };
  const pause = () => {
    clearInterval(timer);
    timer = 0;
    play.textContent = "Play";
    play.setAttribute("aria-pressed", "false");
  };
  const start = () => {
    pause();
    play.textContent = "Pause";
    play.setAttribute("aria-pressed", "true");
    timer = setInterval(() => {
      if (at + step < 0 || at + step >= frames.length) step = -step;
      show(at + step);
    }, 120);
  };
  play.addEventListener("click", () => (timer ? pause() : start()));
  select.addEventListener("change", pause); // the player is hidden with another generator: its timer stops too
  pos.addEventListener("input", () => {
    pause();
    show(Number(pos.value));
  });
  NN.onsubmit(NN.$("walk-form"), NN.$("walk-error"), async () => {
    const card = NN.card(select.value);
    const body = {
      model: card.name,
      seed_a: Number(NN.$("walk-a").value),
      seed_b: Number(NN.$("walk-b").value),
      steps: Number(NN.$("walk-steps").value),
      method: NN.$("walk-method").value,
    };
    if (card.generator.conditional) body.label = cls.value === "" ? 0 : Number(cls.value);
    pause();
    const r = await NN.api("v1/interpolate", body);
    frames = r.frames.map(NN.png);
    ends = [r.seed_a, r.seed_b];
    pos.max = frames.length - 1;
    step = 1;
    show(0);
    NN.$("walk-player").hidden = false;
    if (!matchMedia("(prefers-reduced-motion: reduce)").matches) start();
  });
}

/** A ±1 state as an image: +1 white (ink), as the API draws its states. */
function stateImage(state, side) {
  const canvas = NN.el("canvas", { width: side, height: side });
  const c = canvas.getContext("2d");
  const img = c.createImageData(side, side);
  state.forEach((v, i) => {
    img.data.fill(v > 0 ? 255 : 0, 4 * i, 4 * i + 3);
    img.data[4 * i + 3] = 255;
  });
  c.putImageData(img, 0, 0);
  return canvas.toDataURL("image/png");
}

function figure(src, alt, caption) {
  return NN.el(
    "li",
    {},
    NN.el("figure", {}, NN.el("img", { src, alt, width: 84, height: 84 }), NN.el("figcaption", { text: caption })),
  );
}

/** The energies after each sweep as a line (SVG), each point titled with its value. */
function energyChart(svg, energies) {
  const ns = "http://www.w3.org/2000/svg";
  const lo = Math.min(...energies);
  const hi = Math.max(...energies);
  const x = (i) => 12 + (220 * i) / Math.max(1, energies.length - 1);
  const y = (e) => 10 + (80 * (hi - e)) / (hi - lo || 1);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", energies.map((e, i) => `${x(i)},${y(e)}`).join(" "));
  const dots = energies.map((e, i) => {
    const dot = document.createElementNS(ns, "circle");
    for (const [k, v] of [["cx", x(i)], ["cy", y(e)], ["r", 3]]) dot.setAttribute(k, v);
    const title = document.createElementNS(ns, "title");
    title.textContent = `sweep ${i + 1}: energy ${e.toFixed(2)}`;
    dot.append(title);
    return dot;
  });
  const scale = [hi, lo].map((e) => {
    const label = document.createElementNS(ns, "text");
    for (const [k, v] of [["x", 298], ["y", e === hi ? 12 : 96], ["text-anchor", "end"]]) label.setAttribute(k, v);
    label.textContent = `E ${e.toFixed(1)}`;
    return label;
  });
  svg.replaceChildren(line, ...dots, ...scale);
  svg.setAttribute("aria-label", "Energy after each sweep: " + energies.map((e) => e.toFixed(1)).join(", "));
  svg.removeAttribute("hidden"); // an SVG element has no .hidden property
}

NN.panels.push({
  id: "memory",
  init(models) {
    const memories = models.filter((m) => m.task === "recall");
    const samplers = models.filter((m) => m.task === "generator" && m.generator && m.generator.gibbs);
    NN.$("hopfield").hidden = !memories.length;
    NN.$("rbm").hidden = !samplers.length;
    if (memories.length) hopfield(memories);
    if (samplers.length) rbm(samplers);
    return memories.length + samplers.length > 0;
  },
});

function hopfield(memories) {
  const select = NN.$("hopfield-model");
  const [verdict, error, sweeps, flip] = ["verdict", "error", "sweeps", "flip"].map((k) => NN.$("hopfield-" + k));
  NN.fill(select, memories, "mnist-hopfield");
  const pad = new NN.Pad(NN.$("hopfield-pad"), {
    label: "Digit to recall",
    onchange: (final, err) => err && NN.fail(error, err),
  });
  let found = null; // the state recall settled in from the drawing: the pattern to corrupt
  const latest = NN.latest(verdict.parentElement); // one run writes at a time: the newest
  const recall = async (body) => (await NN.api("v1/recall", { model: select.value, ...body })).results[0];
  const said = (r) =>
    r.spurious
      ? `a spurious state (closest stored pattern overlap ${r.overlap.toFixed(3)})`
      : `stored pattern ${r.matched}, a ${r.label} (overlap ${r.overlap.toFixed(3)})`;
  NN.$("hopfield-find").addEventListener("click", async () => {
    NN.fail(error, null);
    if (pad.isEmpty()) return NN.fail(error, "Draw a digit first.");
    try {
      const r = await latest(() => recall({ images: [pad.image()] }));
      if (r === NN.STALE) return;
      found = { model: select.value, state: r.state };
      verdict.textContent = `From the drawing, recall settled in ${said(r)} after ${r.sweeps} sweeps (${r.outcome}).`;
      sweeps.replaceChildren(figure(NN.png(r.image), `The state recalled from the drawing: ${said(r)}`, "recalled"));
      NN.$("hopfield-energy").setAttribute("hidden", "");
      NN.$("hopfield-corrupt").hidden = false;
    } catch (err) {
      NN.fail(error, err);
    }
  });
  flip.addEventListener("input", () => (NN.$("hopfield-flip-out").value = Math.round(100 * flip.value) + " %"));
  select.addEventListener("change", () => (NN.$("hopfield-corrupt").hidden = true));
  const corrupt = NN.$("hopfield-corrupt");
  NN.onsubmit(corrupt, error, async () => {
    const go = corrupt.querySelector("button");
    if (go.disabled) return; // one run at a time: two would append their sweeps to one list
    go.disabled = true;
    try {
      await latest(corruptAndRecall);
    } finally {
      go.disabled = false;
    }
  });
  // current(): false once a newer run (a recall from the drawing) started, then this one writes no more
  const corruptAndRecall = async (current) => {
    const card = NN.card(found.model);
    const side = card.preprocessing.input_size[0];
    const cue = found.state.slice();
    const rand = NN.rng(Number(NN.$("hopfield-seed").value));
    const order = cue.map((_, i) => i);
    const flips = Math.round(Number(flip.value) * cue.length);
    for (let i = 0; i < flips; i++) {
      const j = i + Math.floor(rand() * (order.length - i)); // a partial Fisher-Yates shuffle
      [order[i], order[j]] = [order[j], order[i]];
      cue[order[i]] = -cue[order[i]];
    }
    sweeps.replaceChildren(figure(stateImage(cue, side), `The cue: ${flips} units flipped`, `cue, ${flips} flipped`));
    const last = await recall({ states: [cue], max_sweeps: 50 });
    if (!current()) return;
    const shown = Math.min(last.sweeps, 20); // sweep k's state is recall stopped after k sweeps
    for (let k = 1; k <= shown; k++) {
      const r = k === last.sweeps ? last : await recall({ states: [cue], max_sweeps: k });
      if (!current()) return;
      const e = r.energies[k - 1].toFixed(1);
      sweeps.append(figure(NN.png(r.image), `The state after sweep ${k}, energy ${e}`, `sweep ${k}: E ${e}`));
    }
    energyChart(NN.$("hopfield-energy"), last.energies);
    verdict.textContent =
      `The cue with ${flips} of ${cue.length} units flipped settled in ${said(last)} after ` +
      `${last.sweeps} sweeps (${last.outcome}).`;
  };
}

function rbm(samplers) {
  const select = NN.$("rbm-model");
  NN.fill(select, samplers, "mnist-rbm");
  const body = NN.$("rbm-chains").tBodies[0];
  const latest = NN.latest();
  NN.onsubmit(NN.$("rbm-form"), NN.$("rbm-error"), async () => {
    const [model, seed, n] = [select.value, Number(NN.$("rbm-seed").value), Number(NN.$("rbm-n").value)];
    body.replaceChildren();
    NN.$("rbm-chains").hidden = false;
    for (const steps of [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]) {
      const r = await latest(() => NN.api("v1/generate", { model, seed, n, steps }));
      if (r === NN.STALE) return; // a newer run started
      const cells = r.samples.map((s, i) =>
        NN.el("img", { src: NN.png(s), width: 42, height: 42, alt: `Chain ${i + 1} after ${steps} steps` }),
      );
      body.append(NN.el("tr", {}, NN.el("th", { scope: "row", text: `${steps} step${steps > 1 ? "s" : ""}` }), NN.el("td", {}, ...cells)));
    }
  });
}

/** A value of a card, as text. */
function shown(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return NN.num(v);
  if (Array.isArray(v)) return v.map(shown).join(", ");
  if (typeof v === "object") return Object.entries(v).map(([k, x]) => `${k}: ${shown(x)}`).join("; ");
  return String(v);
}

function table(caption, obj) {
  const rows = Object.entries(obj || {});
  if (!rows.length) return null;
  return NN.el(
    "table",
    { class: "kv" },
    NN.el("caption", { text: caption }),
    NN.el("tbody", {}, ...rows.map(([k, v]) => NN.el("tr", {}, NN.el("th", { scope: "row", text: k }), NN.el("td", { text: shown(v) })))),
  );
}

/** What each figure an export ships shows; a figure not named here is captioned with its file name. */
const FIGURES = {
  curves: "Training curves",
  samples: "Samples at the end of training",
  centres: "The RBF layer's centres",
  patterns: "The stored patterns",
  energy: "Energy during recall",
  pretraining: "Pretraining of each RBM",
};

/** Load a figure of model m into its <img>; one that fails shows why and is marked data-failed, to be asked
    for again when its card is opened again. */
function loadFigure(m, figure) {
  const img = figure.querySelector("img");
  const error = figure.querySelector(".error");
  figure.removeAttribute("data-failed");
  NN.fail(error, null);
  NN.image(`v1/models/${encodeURIComponent(m.name)}/figures/${encodeURIComponent(img.dataset.figure)}`)
    .then((url) => (img.src = url))
    .catch((err) => {
      figure.setAttribute("data-failed", "");
      NN.fail(error, err);
    });
}

/** The model's figures (its card's ``figures``, GET v1/models/{name}/figures/{figure}), training curves first. */
function figures(m) {
  const names = [...(m.figures || [])].sort((a, b) => (b === "curves.png") - (a === "curves.png"));
  if (!names.length) return null;
  return NN.el(
    "div",
    { class: "figures" },
    ...names.map((name) => {
      const what = FIGURES[name.replace(/\.png$/, "")] || name;
      const img = NN.el("img", { alt: `${what} of ${m.name} (${name})`, "data-figure": name });
      const error = NN.el("p", { class: "error", role: "alert", hidden: true });
      const figure = NN.el("figure", {}, img, NN.el("figcaption", { text: `${what} (${name})` }), error);
      loadFigure(m, figure);
      return figure;
    }),
  );
}

function cardBody(m) {
  const pre = m.preprocessing;
  const about = {
    task: m.task,
    architecture: m.architecture,
    parameters: m.parameters === null ? "not recorded" : m.parameters.toLocaleString("en"),
    dataset: m.dataset,
    version: m.version + (m.versions && m.versions.length > 1 ? ` (served: ${m.versions.join(", ")})` : ""),
    labels: m.labels,
    inputs: m.inputs.map((t) => `${t.name} ${t.dtype} [${t.shape.join(", ")}]`),
    outputs: m.outputs.map((t) => `${t.name} ${t.dtype} [${t.shape.join(", ")}]`),
    preprocessing: pre.tokenizer ? { ...pre.tokenizer, vocab_size: pre.vocab_size } : pre,
    runtime: `${m.providers.join(", ")}; batching ${m.batching.mode}, at most ${m.batching.max_batch_size} rows`,
    exported: `${m.created}, commit ${m.source_commit.slice(0, 10)}, opset ${m.opset}`,
    ready: m.ready ? "yes" : `no: ${m.error}`,
  };
  const c = m.calibration;
  const g = m.generator;
  return NN.el(
    "div",
    { class: "card-body" },
    figures(m),
    table("About", about),
    table("Architecture", m.architecture_config),
    table("Figures on validation data", m.metrics),
    table("Accuracy per class", m.class_metrics),
    c ? table("Calibration", { temperature: c.temperature, "table temperature": c.table_temperature, "flagged power": c.flagged_power, "ECE before": c.ece_before, "ECE after": c.ece_after, fitted: c.fitted_on }) : null,
    m.ood ? table("Out of distribution", { method: m.ood.method, threshold: m.ood.threshold, ...m.ood.figures }) : null,
    m.anomaly ? table("Anomaly threshold", m.anomaly) : null,
    g ? table("Generator", { kind: g.kind, latent: g.latent_dim, conditional: g.conditional, noise: g.noise, gibbs: g.gibbs }) : null,
    table("Training recipe", m.training),
  );
}

NN.panels.push({
  id: "cards",
  init(ready, all) {
    const cards = [...all].sort((a, b) => a.name.localeCompare(b.name));
    NN.$("cards").replaceChildren(
      ...cards.map((m) => {
        const params = m.parameters === null ? "" : ` · ${m.parameters.toLocaleString("en")} parameters`;
        const summary = NN.el("summary", {}, NN.el("strong", { text: m.name }), ` · ${m.task} · ${m.architecture}${params}`);
        const details = NN.el("details", { class: "card", id: "card-" + m.name }, summary);
        // built when first opened: 20 cards of tables would slow the first paint for nothing; opened again,
        // the figures that failed (a busy server's 503) are asked for again
        details.addEventListener("toggle", () => {
          if (!details.open) return;
          if (details.childElementCount === 1) details.append(cardBody(m));
          else for (const figure of details.querySelectorAll("figure[data-failed]")) loadFigure(m, figure);
        });
        return details;
      }),
    );
    return true;
  },
});
