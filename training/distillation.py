"""Knowledge distillation for the text classifiers (Hinton et al. 2015): served models teach a new one.

The teachers are exported artifacts, run by onnxruntime the way the service runs them (their own tokenizer
and vocabulary); the student learns from the average of their probabilities at a fixed temperature T (the
recipe's, not their calibrated one: that was fitted on validation labels, which the student must not see),
its own logits divided by the same T (``training.text_classification.distillation_loss``). The soft term
reaches two kinds of rows:

- the labelled training rows, beside their label's cross-entropy (``teacher_weight`` is the soft term's share);
- extra unlabelled sentences (IMDB's unlabelled reviews cut into sentences): the soft term alone.

The second is what makes distillation pay for a small labelled set (Tang et al. 2019 distil into a BiLSTM
through unlabelled and augmented sentences): the student sees many more sentences than the labels cover, each
with the ensemble's answer, and one network serves what three computed.

A teacher must never have seen a validation sentence: each teacher's model.json must record the student's
data file (same sha256), split kind, fraction and seed, or training refuses to start.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract.metadata import ONNX_FILE, DatasetInfo, TextPreprocessing, load_metadata, softmax
from contract.text import UNK_ID, TokenizerConfig, Vocab, pad_right, tokenize
from contract.text_data import TextDataset

log = logging.getLogger(__name__)

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
    """One exported text classifier: texts -> softmax(logits / temperature), the logits as the service computes
    them for a text of at most ``max_len`` tokens (longer ones are cut: the rows distilled here are no longer)."""

    def __init__(self, folder: Path, temperature: float) -> None:
        self.meta = load_metadata(folder)
        pre = self.meta.preprocessing
        if self.meta.task != "text-classification" or not isinstance(pre, TextPreprocessing):
            raise ValueError(f"{folder}: a teacher must be a text classifier, not {self.meta.task}")
        self.tok: TokenizerConfig = pre.tokenizer
        self.vocab = Vocab.load(folder / pre.vocab_file)
        self.temperature = temperature
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / ONNX_FILE), opts, providers=["CPUExecutionProvider"])
        self.folder = folder

    def probs(self, texts: list[str], batch: int = 256) -> np.ndarray:
        rows = [self.vocab.encode(tokenize(t, self.tok)[: self.tok.max_len]) or [UNK_ID] for t in texts]
        order = np.argsort([len(r) for r in rows], kind="stable")  # similar lengths together: little padding
        out = np.zeros((len(rows), len(self.meta.labels)), dtype=np.float64)
        for i in range(0, len(rows), batch):
            idx = order[i : i + batch]
            ids, lengths = pad_right([rows[j] for j in idx])
            (logits,) = self.session.run(["logits"], {"ids": ids, "lengths": lengths})
            out[idx] = softmax(logits, self.temperature)
        return out


def check_teacher(teacher: Teacher, ds: TextDataset, split: str, val_fraction: float, split_seed: int) -> None:
    """Refuse a teacher that may have trained on the student's validation rows, or answers other labels."""
    d = teacher.meta.dataset
    ours = d.model_copy(
        update={
            "sha256": ds.sha256,
            "split": DatasetInfo.recorded_split(split),
            "val_fraction": val_fraction,
            "split_seed": split_seed,
        }
    )
    if not ds.sha256 or not d.same_split(ours):
        raise ValueError(
            f"teacher {teacher.folder} was trained on another split ({d.split}, {d.val_fraction}, seed "
            f"{d.split_seed}, files {sorted(d.sha256)}): it may have seen the student's validation rows"
        )
    if teacher.meta.labels != ds.label_names:
        raise ValueError(f"teacher {teacher.folder} answers {teacher.meta.labels}, the data {ds.label_names}")


def ensemble_probs(teachers: list[Teacher], texts: list[str]) -> np.ndarray:
    """The teachers' probabilities, averaged: (N, K) float32."""
    return np.mean([t.probs(texts) for t in teachers], axis=0).astype(np.float32)
