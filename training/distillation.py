"""Knowledge distillation (Hinton et al. 2015): served classifiers teach a new one, text or image.

The teachers are exported artifacts, run by onnxruntime the way the service runs them (a text teacher with its
own tokenizer and vocabulary, an image teacher with its own normalisation); the student learns from the average
of their probabilities at a fixed temperature T (the recipe's, not their calibrated one: that was fitted on
validation labels, which the student must not see), its own logits divided by the same T
(``distillation_loss``).

Image students (training/image_classification.py) ask their teachers about every batch as it is augmented, photos
included: a small network learns what a bigger one makes of the same shifted, photographed digit.

Text students ask once, before training, and the soft term reaches two kinds of rows:

- the labelled training rows, beside their label's cross-entropy (``teacher_weight`` is the soft term's share);
- extra unlabelled sentences (IMDB's unlabelled reviews cut into sentences): the soft term alone.

The second is what makes distillation pay for a small labelled set (Tang et al. 2019 distil into a BiLSTM
through unlabelled and augmented sentences): the student sees many more sentences than the labels cover, each
with the ensemble's answer, and one network serves what three computed.

A teacher must never have seen a validation sentence: each teacher's model.json must record the student's
data file (same sha256), split kind, fraction and seed, or training refuses to start. A text teacher trained on
another corpus altogether (``imdb-lstm`` for an SST-2 student: whole reviews of another site, where SST-2's
models lean negative on text unlike film criticism) is taken only when its training file is here, is the file it
recorded, and holds none of the student's validation texts (``other_corpus``, by their tokens).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F

from contract.data import Dataset
from contract.images import normalize
from contract.metadata import ONNX_FILE, DatasetInfo, TextPreprocessing, load_metadata, sha256_file, softmax
from contract.text import TokenizerConfig, Vocab, text_logits, tokenize
from contract.text_data import PRESETS as TEXT_PRESETS
from contract.text_data import TextDataset, load_table, preset_for
from training.common import LossFn

log = logging.getLogger(__name__)

# a validation text this long found in a teacher's other corpus refuses the teacher (other_corpus); the six of
# SST-2's 688 validation sentences inside IMDB's training reviews are 3 to 7 tokens long
OTHER_CORPUS_TOKENS = 8
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def review_sentences(
    reviews: list[str], n: int, rng: np.random.Generator, tok: TokenizerConfig, min_tokens: int = 4
) -> list[str]:
    """Up to ``n`` distinct sentences drawn from the reviews, each of ``min_tokens`` to ``max_len`` tokens
    (HTML line breaks and the like go the tokenizer's way: they are not words)."""
    picked: dict[str, None] = {}
    for r in rng.permutation(len(reviews)):
        for s in _SENTENCE_END.split(re.sub(r"<br\s*/?>", " ", reviews[int(r)])):
            s = s.strip()
            if min_tokens <= len(tokenize(s, tok)) <= tok.max_len:
                picked.setdefault(s, None)
        if len(picked) >= n:
            break
    out = list(picked)
    rng.shuffle(out)
    return out[:n]


class Teacher:
    """One exported classifier of ``task``, run by onnxruntime on one thread."""

    task = ""

    def __init__(self, folder: Path, temperature: float) -> None:
        self.meta = load_metadata(folder)
        if self.meta.task != self.task:
            raise ValueError(f"{folder}: a teacher here must be a {self.task} model, not {self.meta.task}")
        self.temperature = temperature
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / ONNX_FILE), opts, providers=["CPUExecutionProvider"])
        self.folder = folder

    other_corpus: dict[str, Any] | None = None  # a teacher of another corpus: what other_corpus checked
    share = 1.0  # its share of the teachers' average (relative to the others')

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.meta.name, "onnx_sha256": self.meta.onnx_sha256}
        out |= {"other_corpus": self.other_corpus} if self.other_corpus else {}
        return out | ({"share": self.share} if self.share != 1.0 else {})


class TextTeacher(Teacher):
    """Texts -> softmax(logits / temperature), the logits as the service computes them for a text's first
    ``max_len`` tokens (one window: the rows distilled here are no longer)."""

    task = "text-classification"

    def __init__(self, folder: Path, temperature: float) -> None:
        super().__init__(folder, temperature)
        pre = self.meta.preprocessing
        assert isinstance(pre, TextPreprocessing)
        self.tok: TokenizerConfig = pre.tokenizer
        self.vocab = Vocab.load(folder / pre.vocab_file)

    def probs(self, texts: list[str], batch: int = 256) -> np.ndarray:
        return softmax(text_logits(self.session, texts, self.tok, self.vocab, batch, windows=1), self.temperature)


class ImageTeacher(Teacher):
    """Pixels (B, C, H, W) in 0..255, float or uint8, as a training batch holds them after augmentation ->
    softmax(logits / temperature), normalised the way the service normalises the teacher's inputs."""

    task = "image-classification"

    def probs(self, pixels: np.ndarray) -> np.ndarray:
        x = normalize(pixels, self.meta.image_preprocessing())
        (logits,) = self.session.run(["logits"], {self.session.get_inputs()[0].name: x})
        return softmax(logits, self.temperature)


def check_teacher(
    teacher: Teacher,
    ds: TextDataset | Dataset,
    split: str,
    val_fraction: float,
    split_seed: int,
    val_texts: list[str] | None = None,
) -> None:
    """Refuse a teacher that may have trained on the student's validation rows, or answers other labels. With
    ``val_texts`` (a text student's), a teacher of another corpus is taken when ``other_corpus`` clears it."""
    d = teacher.meta.dataset
    ours = d.model_copy(
        update={
            "sha256": ds.sha256,
            "split": DatasetInfo.recorded_split(split),
            "val_fraction": val_fraction,
            "split_seed": split_seed,
        }
    )
    same = bool(ds.sha256) and d.same_split(ours)
    other = val_texts is not None and bool(d.sha256) and not set(d.sha256.values()) & set(ds.sha256.values())
    if not same and not other:
        raise ValueError(
            f"teacher {teacher.folder} was trained on another split ({d.split}, {d.val_fraction}, seed "
            f"{d.split_seed}, files {sorted(d.sha256)}): it may have seen the student's validation rows"
        )
    if teacher.meta.labels != ds.label_names:
        raise ValueError(f"teacher {teacher.folder} answers {teacher.meta.labels}, the data {ds.label_names}")
    if not same:
        assert isinstance(teacher, TextTeacher) and val_texts is not None
        teacher.other_corpus = other_corpus(teacher, val_texts)


def other_corpus(teacher: TextTeacher, val_texts: list[str]) -> dict[str, Any]:
    """A teacher trained on another corpus: its recorded training file, read from where it was recorded (and
    its sha256 checked), must hold none of ``val_texts`` of OTHER_CORPUS_TOKENS tokens or more anywhere in any of
    its rows (compared as the teacher's tokens, so that spacing, quotes and case do not hide a copy). Shorter
    ones are everyday English that any corpus holds ("i like it .", "big mistake ."): counted, not refused.
    -> what was checked, for the record."""
    d = teacher.meta.dataset
    path = Path(d.source)
    if len(d.sha256) != 1 or not path.is_file() or d.sha256.get(path.name) != sha256_file(path):
        raise ValueError(
            f"teacher {teacher.folder} was trained on another corpus ({d.source}), which is not here as it was "
            "recorded: whether it holds the student's validation rows cannot be checked"
        )
    tok = teacher.tok.model_copy(update={"max_len": 10**9})
    name = d.name if d.name in TEXT_PRESETS else preset_for(path)  # read as the teacher's training read it
    table = load_table(path, name=name, text_column=d.columns.get("text"), label_column=d.columns.get("label"))
    corpus = "\n".join(" " + " ".join(tokenize(t, tok)) + " " for t in table.texts)
    seen = [k for k in (tokenize(t, tok) for t in val_texts) if f" {' '.join(k)} " in corpus]
    long = [" ".join(k) for k in seen if len(k) >= OTHER_CORPUS_TOKENS]
    if long:
        raise ValueError(f"teacher {teacher.folder}: its corpus {path.name} holds validation texts, e.g. {long[0]!r}")
    return {"file": path.name, "sha256": d.sha256[path.name], "short_validation_texts_found": len(seen)}


def teachers(
    cfg: Any, ds: TextDataset | Dataset, split: str, kind: type[Teacher], val_texts: list[str] | None = None
) -> list[Any]:
    """The config's teachers (``cfg.teachers``, ``cfg.distill_temperature``), each checked against the
    student's data and split (and, with ``val_texts``, a text teacher of another corpus against them)."""
    out = [kind(Path(t), cfg.distill_temperature) for t in cfg.teachers]
    shares = cfg.teacher_shares or (1.0,) * len(out)
    if len(shares) != len(out) or min(shares, default=1.0) <= 0:
        raise ValueError(f"--teacher-shares: one positive share per teacher ({len(out)}), not {shares}")
    for t, share in zip(out, shares, strict=True):
        check_teacher(t, ds, split, cfg.val_fraction, cfg.split_seed, val_texts)
        t.share = share
    return out


def ensemble_probs(teachers: list[Any], inputs: Any) -> np.ndarray:
    """The teachers' probabilities, averaged by their shares: (N, K) float32."""
    return np.average([t.probs(inputs) for t in teachers], axis=0, weights=[t.share for t in teachers]).astype(
        np.float32
    )


def record(teachers: list[Teacher], cfg: Any, agree: float) -> dict[str, Any]:
    """What model.json's ``distillation`` says of a run (contract.metadata.Distillation)."""
    return {
        "teachers": [t.record() for t in teachers],
        "teacher_weight": cfg.teacher_weight,
        "temperature": cfg.distill_temperature,
        "teachers_agree_with_labels": agree,
    }


def distillation_loss(weight: float, temperature: float) -> LossFn:
    """Hinton et al. (2015): ``(1 - weight) * CE(logits, label) + weight * T^2 * KL(teachers_T || student_T)``, the
    student's logits divided by the same T as the teachers' (T^2 keeps the soft term's gradients at the scale of
    the hard one). ``y`` is (B, 2K): the row's one-hot label (zeros for an unlabelled row: no hard term), then the
    teachers' probabilities at T. The metric counts rows whose top class is the label's (or the teachers')."""

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
        k = logits.shape[1]
        hard, soft = y[:, :k], y[:, k:]
        hard_term = -(hard * F.log_softmax(logits, dim=1)).sum(1)
        student_t = F.log_softmax(logits / temperature, dim=1)
        kl = (soft * (torch.log(soft.clamp(min=1e-12)) - student_t)).sum(1)
        loss = ((1.0 - weight) * hard_term + weight * temperature**2 * kl).mean()
        target = torch.where(hard.sum(1, keepdim=True) > 0, hard, soft).argmax(1)
        return loss, float((logits.argmax(1) == target).sum())

    return loss_fn
