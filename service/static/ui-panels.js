/* The playground's input panels: draw or photograph a digit for a classifier (POST /v1/classify), type a
   review (POST /v1/sentiment), reconstruct and denoise with an autoencoder (POST /v1/reconstruct). Each
   answers live, debounced, and shows only the answer to its latest input. */
"use strict";

NN.panels.push({
  id: "classify",
  init(models) {
    const mine = models.filter((m) => m.task === "image-classification");
    if (!mine.length) return false;
    const select = NN.$("classify-model");
    const [verdict, error, bars, confidence, ood] = ["verdict", "error", "bars", "confidence", "ood"].map((k) =>
      NN.$("classify-" + k),
    );
    NN.fill(select, mine, "mnist-cnn");
    const latest = NN.latest(verdict.parentElement);
    const clear = () => {
      latest.stale(); // an answer still in flight is to an input no longer there
      verdict.textContent = "";
      bars.replaceChildren();
      confidence.textContent = "";
      ood.hidden = NN.$("classify-saw").hidden = true;
    };
    const reset = () => {
      clear();
      verdict.textContent = "Draw a digit: the answer follows your pen.";
    };
    const run = async () => {
      NN.fail(error, null);
      if (pad.isEmpty()) return reset();
      const card = NN.card(select.value);
      const body = { model: card.name, images: [pad.image()], top_k: card.labels.length, include_input: true };
      try {
        const r = await latest(() => NN.api("v1/classify", body));
        if (r !== NN.STALE) show(r.predictions[0], card);
      } catch (err) {
        clear();
        NN.fail(error, err);
      }
    };
    const show = (p, card) => {
      verdict.textContent = NN.verdict(card.name, p);
      const prob = new Map(p.top_k.map((s) => [s.label, s.score]));
      NN.bars(bars, card.labels.map((l) => [l, prob.get(l) || 0]), p.label);
      confidence.textContent = card.calibration
        ? `Calibrated confidence ${NN.pct(p.score)}: softmax at a temperature fitted on validation data (${card.calibration.temperature.toFixed(2)}; higher for an answer flagged out of distribution${card.calibration.table_temperature ? ", " + card.calibration.table_temperature.toFixed(2) + " for a sheet cut out of a table" : ""}).`
        : `Confidence ${NN.pct(p.score)} (this model is not calibrated: its plain softmax).`;
      NN.ood(ood, p, card);
      const img = NN.$("classify-input");
      img.src = NN.png(p.input);
      img.alt = `The 28×28 image ${card.name} saw, read as ${p.label}`;
      NN.$("classify-saw").hidden = false;
    };
    const pad = new NN.Pad(NN.$("classify-pad"), { label: "Digit", onchange: NN.live(run, error, clear) });
    select.addEventListener("change", run);
    return true;
  },
});

NN.panels.push({
  id: "sentiment",
  init(models) {
    const mine = models.filter((m) => m.task === "text-classification");
    if (!mine.length) return false;
    const select = NN.$("sentiment-model");
    const text = NN.$("sentiment-text");
    const explain = NN.$("sentiment-explain");
    const [verdict, error, bars, ood, tokens] = ["verdict", "error", "bars", "ood", "tokens"].map((k) =>
      NN.$("sentiment-" + k),
    );
    const attends = (card) => card.architecture_config && card.architecture_config.pooling === "attention";
    NN.fill(select, mine, (mine.find(attends) || mine[0]).name);
    const latest = NN.latest(verdict.parentElement);
    const options = () => {
      const card = NN.card(select.value);
      explain.disabled = !attends(card);
      NN.$("sentiment-explain-note").textContent = explain.disabled
        ? `(${card.name} pools without attention: nothing to highlight)`
        : "";
    };
    const clear = () => {
      latest.stale(); // an answer still in flight is to a text no longer there
      verdict.textContent = tokens.textContent = "";
      bars.replaceChildren();
      ood.hidden = NN.$("sentiment-explained").hidden = true;
    };
    const run = async () => {
      NN.fail(error, null);
      const card = NN.card(select.value);
      const review = text.value;
      if (!review.trim()) {
        clear();
        verdict.textContent = "Type a review.";
        return;
      }
      const body = { model: card.name, texts: [review], explain: explain.checked && !explain.disabled };
      try {
        const r = await latest(() => NN.api("v1/sentiment", body));
        if (r !== NN.STALE) show(r.predictions[0], card, review);
      } catch (err) {
        clear(); // the answer shown was to another text
        NN.fail(error, err);
      }
    };
    const show = (p, card, review) => {
      verdict.textContent = NN.verdict(card.name, p);
      NN.bars(bars, card.labels.map((l) => [l, p.probs[l] || 0]), p.label);
      NN.ood(ood, p, card);
      tokens.textContent =
        `${p.tokens} tokens, read in ${p.windows} window${p.windows > 1 ? "s" : ""} of at most ` +
        `${card.preprocessing.tokenizer.max_len}` + (p.truncated ? `; only the first ${p.tokens_read} were read.` : ".");
      const explained = Boolean(p.explanation && p.explanation.length); // none for a text with no word it knows
      NN.$("sentiment-explained").hidden = !explained;
      if (explained) highlight(review, p.explanation);
    };
    // the review as typed, each token the model read marked with a shade of its attention weight; the spans
    // count characters (code points), a JavaScript string UTF-16 units: an emoji is one of the first, two of the
    // second, so the text is cut as an array of code points
    const highlight = (review, words) => {
      const chars = Array.from(review);
      const cut = (a, b) => chars.slice(a, b).join("");
      const max = Math.max(...words.map((w) => w.weight)) || 1;
      const out = [];
      let at = 0;
      for (const w of words) {
        if (w.start === null || w.start < at) continue;
        out.push(cut(at, w.start));
        const mark = NN.el("mark", {
          title: `${w.token}: ${NN.pct(w.weight)} of the attention`,
          "data-weight": w.weight.toFixed(4),
          text: cut(w.start, w.end),
        });
        mark.style.backgroundColor = `rgba(255, 176, 0, ${(0.08 + (0.92 * w.weight) / max).toFixed(3)})`;
        out.push(mark);
        at = w.end;
      }
      out.push(cut(at));
      NN.$("sentiment-highlight").replaceChildren(...out);
      const top = [...words].sort((a, b) => b.weight - a.weight).slice(0, 5);
      NN.$("sentiment-top").textContent =
        "Most attended: " + top.map((w) => `${w.token} (${NN.pct(w.weight)})`).join(", ") + ".";
    };
    const later = NN.debounce(run, 300);
    text.addEventListener("input", () => {
      if (text.value.trim()) return later();
      later.cancel(); // emptied: the answer shown goes at once, not after the pause
      run();
    });
    select.addEventListener("change", () => {
      options();
      run();
    });
    explain.addEventListener("change", run);
    options();
    run();
    return true;
  },
});

NN.panels.push({
  id: "autoencoder",
  init(models) {
    const mine = models.filter((m) => m.task === "autoencoder");
    if (!mine.length) return false;
    const select = NN.$("ae-model");
    const [kind, level, levelOut] = [NN.$("ae-noise"), NN.$("ae-level"), NN.$("ae-level-out")];
    const [verdict, error] = [NN.$("ae-verdict"), NN.$("ae-error")];
    NN.fill(select, mine, mine.some((m) => m.name === "mnist-dae") ? "mnist-dae" : mine[0].name);
    const latest = NN.latest(verdict.parentElement);
    let seed = 1;
    // a denoising model starts with the noise it was trained on (its card's architecture_config)
    const defaults = () => {
      const cfg = NN.card(select.value).architecture_config || {};
      if ([...kind.options].some((o) => o.value === cfg.noise)) kind.value = cfg.noise;
      level.value = cfg.noise_level || 0;
      levelOut.value = level.value;
    };
    const run = async () => {
      NN.fail(error, null);
      if (pad.isEmpty()) {
        clear();
        verdict.textContent = "Draw a digit to reconstruct it.";
        return;
      }
      const card = NN.card(select.value);
      let input = pad.image();
      if (Number(level.value) > 0) {
        const small = pad.digit28();
        if (small) input = NN.corrupt(small, kind.value, Number(level.value), seed).toDataURL("image/png");
      }
      try {
        const r = await latest(() => NN.api("v1/reconstruct", { model: card.name, images: [input] }));
        if (r !== NN.STALE) show(r, card, input);
      } catch (err) {
        clear(); // the answer shown was to another input
        NN.fail(error, err);
      }
    };
    const show = (r, card, input) => {
      const res = r.results[0];
      const noisy = Number(level.value) > 0 ? `with ${kind.value} noise at ${level.value}` : "as drawn";
      NN.$("ae-input").src = input;
      NN.$("ae-input").alt = `The input sent to ${card.name}, ${noisy}`;
      NN.$("ae-output").src = NN.png(res.reconstruction);
      NN.$("ae-output").alt = `${card.name}'s reconstruction of it`;
      NN.$("ae-meter").style.width = Math.min(100, (50 * res.error) / r.threshold).toFixed(1) + "%";
      NN.$("ae-score").classList.toggle("warn", res.anomaly);
      const pc = card.anomaly ? card.anomaly.percentile : 99;
      NN.$("ae-score-text").textContent =
        `Anomaly score (squared error over the pixels) ${NN.num(res.error)}; threshold ${NN.num(r.threshold)}, ` +
        `the ${pc}th percentile on validation data (the mark halfway).`;
      const own = !res.anomaly_reason || res.anomaly_reason === "unlike_training_data"; // the error's verdict
      verdict.textContent = !res.anomaly
        ? `Normal: ${card.name} reconstructs it within its threshold.`
        : own
          ? `Anomaly: ${card.name} reconstructs this input worse than ${pc} % of its validation images.`
          : `Anomaly: ${NN.why(res.anomaly_reason)}.`;
      NN.$("ae-pair").hidden = NN.$("ae-score").hidden = false;
    };
    const later = NN.debounce(run, 200);
    const clear = () => {
      latest.stale(); // an answer still in flight is to an input no longer there
      verdict.textContent = NN.$("ae-score-text").textContent = "";
      NN.$("ae-meter").style.width = "0%";
      NN.$("ae-pair").hidden = NN.$("ae-score").hidden = true;
    };
    const pad = new NN.Pad(NN.$("ae-pad"), {
      label: "Digit for the autoencoder",
      onchange: NN.live(run, error, clear),
    });
    select.addEventListener("change", () => {
      defaults();
      run();
    });
    kind.addEventListener("change", run);
    level.addEventListener("input", () => {
      levelOut.value = level.value;
      later();
    });
    NN.$("ae-resample").addEventListener("click", () => {
      seed += 1;
      run();
    });
    defaults();
    return true;
  },
});
