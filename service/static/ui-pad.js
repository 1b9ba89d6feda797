/* A drawing pad: white paper drawn on with a mouse, a finger or a pen (pointer events), or with the keyboard
   (arrow keys move the pen, Space puts it down or lifts it), or replaced by a photo (a file picked, or
   dropped on the pad). ``image()`` is what a request sends: the photo as it was picked, or the drawing as a
   PNG; the server prepares either the way the model's card says. */
"use strict";

NN.Pad = class {
  /** root: an empty element with an id; label: what to draw; onchange(final): after each change (final at
      the end of a stroke, a photo or a clear). */
  constructor(root, { label, onchange, size = 280, stroke = 22 }) {
    this.size = size;
    this.stroke = stroke;
    this.onchange = onchange;
    this.photo = null; // the picked file as a data URL, until something is drawn over it
    this.drawn = false;
    this.pen = { x: size / 2, y: size / 2, down: false };
    const id = root.id;
    this.canvas = NN.el("canvas", {
      width: size,
      height: size,
      tabindex: "0",
      "aria-label": `${label}: drawing pad`,
      "aria-describedby": id + "-help",
    });
    this.cursor = NN.el("span", { class: "pad-cursor", "aria-hidden": "true", hidden: true });
    const file = NN.el("input", {
      type: "file",
      id: id + "-file",
      accept: "image/png,image/jpeg,image/webp",
      class: "visually-hidden",
    });
    const clear = NN.el("button", { type: "button", text: "Clear" });
    root.append(
      NN.el("div", { class: "pad-paper" }, this.canvas, this.cursor),
      NN.el(
        "p",
        { class: "pad-tools" },
        clear,
        " ",
        file,
        NN.el("label", { for: file.id, class: "button", text: "Upload a photo" }),
      ),
      NN.el("p", {
        id: id + "-help",
        class: "hint",
        text:
          "Draw with a mouse, a finger or a pen, or drop a PNG, JPEG or WebP photo on the paper. Keyboard: the arrow " +
          "keys move the pen (with Shift, in small steps), Space puts it down or lifts it, Delete clears.",
      }),
    );
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true });
    this.paper();
    clear.addEventListener("click", () => this.clear());
    file.addEventListener("change", () => file.files[0] && this.load(file.files[0]).finally(() => (file.value = "")));
    root.addEventListener("dragover", (ev) => ev.preventDefault());
    root.addEventListener("drop", (ev) => {
      ev.preventDefault();
      if (ev.dataTransfer.files[0]) this.load(ev.dataTransfer.files[0]);
    });
    this.pointers();
    this.keyboard();
  }

  paper() {
    this.ctx.fillStyle = "#fff";
    this.ctx.fillRect(0, 0, this.size, this.size);
  }

  clear() {
    this.paper();
    this.drawn = false;
    this.photo = null;
    this.onchange(true);
  }

  changed(final) {
    this.drawn = true;
    this.photo = null;
    this.onchange(final);
  }

  isEmpty() {
    return !this.drawn;
  }

  /** What a request sends: a data URL (the photo as picked, or the drawing as PNG). */
  image() {
    return this.photo || this.canvas.toDataURL("image/png");
  }

  line(from, to, width) {
    const c = this.ctx;
    c.strokeStyle = c.fillStyle = "#111";
    c.lineCap = c.lineJoin = "round";
    c.lineWidth = width;
    c.beginPath();
    c.moveTo(from[0], from[1]);
    c.lineTo(to[0], to[1]);
    c.stroke();
  }

  pointers() {
    const cv = this.canvas;
    let last = null;
    const at = (ev) => {
      const r = cv.getBoundingClientRect();
      return [((ev.clientX - r.left) * this.size) / r.width, ((ev.clientY - r.top) * this.size) / r.height];
    };
    // a pen draws thinner or thicker with its pressure; a mouse or finger at the pad's width
    const width = (ev) => (ev.pointerType === "pen" && ev.pressure > 0 ? this.stroke * (0.5 + ev.pressure) : this.stroke);
    cv.addEventListener("pointerdown", (ev) => {
      if (ev.button !== 0) return;
      ev.preventDefault();
      cv.setPointerCapture(ev.pointerId);
      last = at(ev);
      this.line(last, last, width(ev));
      this.changed(false);
    });
    cv.addEventListener("pointermove", (ev) => {
      if (last === null) return;
      const all = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [];
      for (const e of all.length ? all : [ev]) {
        const p = at(e);
        this.line(last, p, width(e));
        last = p;
      }
      this.changed(false);
    });
    const up = () => {
      if (last === null) return;
      last = null;
      this.changed(true);
    };
    cv.addEventListener("pointerup", up);
    cv.addEventListener("pointercancel", up);
  }

  keyboard() {
    const cv = this.canvas;
    const show = () => {
      this.cursor.hidden = false;
      this.cursor.classList.toggle("down", this.pen.down);
      this.cursor.style.left = (100 * this.pen.x) / this.size + "%";
      this.cursor.style.top = (100 * this.pen.y) / this.size + "%";
    };
    cv.addEventListener("focus", show);
    cv.addEventListener("blur", () => {
      this.cursor.hidden = true;
      if (this.pen.down) {
        this.pen.down = false;
        this.changed(true);
      }
    });
    cv.addEventListener("keydown", (ev) => {
      const step = ev.shiftKey ? 4 : 14;
      const move = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] }[ev.key];
      const pen = this.pen;
      if (move) {
        const from = [pen.x, pen.y];
        pen.x = Math.min(this.size, Math.max(0, pen.x + move[0]));
        pen.y = Math.min(this.size, Math.max(0, pen.y + move[1]));
        if (pen.down) {
          this.line(from, [pen.x, pen.y], this.stroke);
          this.changed(false);
        }
      } else if (ev.key === " " || ev.key === "Enter") {
        pen.down = !pen.down;
        if (pen.down) this.line([pen.x, pen.y], [pen.x, pen.y], this.stroke);
        this.changed(!pen.down);
      } else if (ev.key === "Delete" || ev.key === "Backspace") {
        pen.down = false;
        this.clear();
      } else return;
      ev.preventDefault();
      show();
    });
  }

  /** A picked or dropped photo: shown on the paper (fitted whole), sent as it is. */
  async load(file) {
    if (!/^image\/(png|jpeg|webp)$/.test(file.type)) {
      this.onchange(true, new Error(`${file.name}: a PNG, JPEG or WebP image, please.`));
      return;
    }
    const url = await new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
    const img = new Image();
    img.src = url;
    try {
      await img.decode();
    } catch {
      this.onchange(true, new Error(`${file.name}: this browser cannot read it as an image.`));
      return;
    }
    const s = Math.min(this.size / img.naturalWidth, this.size / img.naturalHeight);
    const w = img.naturalWidth * s;
    const h = img.naturalHeight * s;
    this.paper();
    this.ctx.drawImage(img, (this.size - w) / 2, (this.size - h) / 2, w, h);
    this.drawn = true;
    this.photo = url;
    this.onchange(true);
  }

  /** The drawing as MNIST was made, done here: the ink's box scaled into 20×20, centred in 28×28, white ink
      on black. Returns a 28×28 canvas, or null when there is no ink. */
  digit28() {
    const { data } = this.ctx.getImageData(0, 0, this.size, this.size);
    let top = this.size, left = this.size, bottom = -1, right = -1;
    for (let y = 0; y < this.size; y++)
      for (let x = 0; x < this.size; x++)
        if (data[4 * (y * this.size + x)] < 160) {
          top = Math.min(top, y);
          bottom = Math.max(bottom, y);
          left = Math.min(left, x);
          right = Math.max(right, x);
        }
    if (bottom < 0) return null;
    const w = right - left + 1;
    const h = bottom - top + 1;
    const s = 20 / Math.max(w, h);
    const out = NN.el("canvas", { width: 28, height: 28 });
    const c = out.getContext("2d", { willReadFrequently: true });
    c.fillStyle = "#000";
    c.fillRect(0, 0, 28, 28);
    c.filter = "invert(1)";
    c.imageSmoothingQuality = "high";
    c.drawImage(this.canvas, left, top, w, h, 14 - (w * s) / 2, 14 - (h * s) / 2, w * s, h * s);
    return out;
  }
};

/** Corrupt a 28×28 canvas in place: "masking" drops ink (pixels set to 0), "salt-and-pepper" sets pixels to
    0 or 255, "gaussian" adds N(0, level²) in [0, 1] units; ``level`` is the share of pixels (or the σ). */
NN.corrupt = function (canvas, kind, level, seed) {
  const c = canvas.getContext("2d", { willReadFrequently: true });
  const img = c.getImageData(0, 0, canvas.width, canvas.height);
  const rand = NN.rng(seed);
  const d = img.data;
  for (let i = 0; i < d.length; i += 4) {
    let v = d[i];
    if (kind === "gaussian") {
      const g = Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand()); // Box-Muller
      v = Math.min(255, Math.max(0, v + 255 * level * g));
    } else if (rand() < level) v = kind === "masking" || rand() < 0.5 ? 0 : 255;
    d[i] = d[i + 1] = d[i + 2] = v;
  }
  c.putImageData(img, 0, 0);
  return canvas;
};
