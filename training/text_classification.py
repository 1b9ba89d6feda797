"""The text-classification training task: a registered recurrent model + a TextDataset -> checkpoint dict."""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import models
from contract.metadata import sha256_file
from contract.text import PAD_ID, UNK_ID, TokenizerConfig, Vocab, pad_right, tokenize
from contract.text_data import PRESETS as TEXT_PRESETS
from contract.text_data import TextDataset, load_table, preset_for, split, synthetic_sentiment, worded
from training import counterfactual, distillation
from training.cli import IMAGE_FLAGS, common_config, model_args, positive
from training.common import (
    Batch,
    TrainConfig,
    accuracy_summary,
    checkpoint_dict,
    final_metrics,
    fit,
    fixed_by_data,
    seed_everything,
)
from training.plots import plot_curves
from training.registry import Recipe, register_recipe
from training.word_vectors import VECTORS, init_embedding, load_vectors, merged_vocab, unsup_texts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextTrainConfig(TrainConfig):
    model: str = "rnn-classifier"
    epochs: int = 8
    batch_size: int = 64
    optimizer: str = "adam"
    weight_decay: float = 0.0
    patience: int = 3
    augment: str = "none"
    split: str = "random"  # random (distinct texts, stratified) | sentences (contract.text_data.phrase_split)
    max_len: int = 64
    min_freq: int = 2
    max_vocab: int = 30_000
    clip_grad: float = 1.0
    vectors: str | None = None  # a training.word_vectors folder: the embedding starts from its vectors
    freeze_vectors: bool = True  # rows that have a pre-trained vector stay fixed (unseen words keep their meaning)
    # distillation (teachers: TrainConfig's) on extra sentences only the teachers label
    unlabelled: str | None = None  # a gzipped CSV of reviews (IMDB's unsup.csv.gz) cut into extra sentences
    unlabelled_rows: int = 0
    # each training token replaced, with this chance per epoch, by a word drawn evenly from the vocabulary (the
    # row keeps its label): a word's mere presence should not decide a text's sentiment (random replacement, as
    # in Wei & Zou 2019's EDA), which is how models trained on film criticism read a drill or a hotel room
    substitute: float = 0.0
    # each training row holding an opinion word turned, with this chance per epoch, into its counterfactual:
    # opinion words swapped for their opposite, the label turned over (training/counterfactual.py)
    counterfactual: float = 0.0
    # each training row with one opinion word, no negation and a label of the word's sign given, with this chance
    # per epoch, a negation before that word ("not", "never", "n't", "no", half of the time with a filler: "not
    # too bad") and the label turned over (training/counterfactual.py: negated)
    negate: float = 0.0


def pad_batch(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence: -> ids (B, T) int64, lengths (B,) int64 (empty rows get one <unk>)."""
    ids, lengths = pad_right([s or [UNK_ID] for s in seqs])
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def length_bucketed(order: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list:
    """Shuffled batches of similar length (sorted within windows of 50 batches) so little is padding."""
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def substituted(ids: torch.Tensor, chance: float, vocab_size: int, gen: torch.Generator) -> torch.Tensor:
    """``ids`` with each word (not padding or ``<unk>``) replaced, with ``chance``, by a word drawn evenly from
    the vocabulary's."""
    if chance <= 0:
        return ids
    swap = (torch.rand(ids.shape, generator=gen) < chance) & (ids > UNK_ID)
    return torch.where(swap, torch.randint(UNK_ID + 1, vocab_size, ids.shape, generator=gen), ids)


@torch.no_grad()
def evaluate(model: torch.nn.Module, seqs: list[list[int]], labels: np.ndarray) -> tuple[float, np.ndarray]:
    model.eval()
    losses, probs = [], []
    order = np.argsort([len(s) for s in seqs], kind="stable")
    for i in range(0, len(order), 256):
        idx = order[i : i + 256]
        ids, lengths = pad_batch([seqs[j] for j in idx])
        logits = model(ids, lengths)
        losses.append(F.cross_entropy(logits, torch.from_numpy(labels[idx]), reduction="sum").item())
        probs.append((idx, logits.softmax(1).numpy()))
    out = np.zeros((len(seqs), probs[0][1].shape[1]), dtype=np.float32)
    for idx, p in probs:
        out[idx] = p
    return sum(losses) / len(seqs), out


def start_from_vectors(
    model: torch.nn.Module, vocab: Vocab, words: list[str], vectors: np.ndarray, cfg: TextTrainConfig, rng
) -> dict[str, Any]:
    """Copy the word vectors into the embedding; with ``freeze_vectors`` their rows get no gradient (the
    words the training texts lack keep the place the vectors gave them). -> what was done, for the record."""
    weight = model.embed.weight  # type: ignore[union-attr]
    with torch.no_grad():
        weight.copy_(torch.from_numpy(init_embedding(vocab, words, vectors, rng)))
    known = set(words)
    has_vector = torch.tensor([w in known for w in vocab.itos])
    if cfg.freeze_vectors:
        if cfg.weight_decay:  # decay moves a row whatever its gradient: the fixed rows would drift
            raise ValueError("fixed word vectors and --weight-decay do not mix: add --tune-vectors or drop the decay")
        weight.register_hook(lambda g: g.masked_fill(has_vector.unsqueeze(1), 0.0))
    return {
        "init": "word vectors",
        "rows_from_vectors": int(has_vector.sum()),
        "rows": len(vocab),
        "frozen": cfg.freeze_vectors,
    }


def soft_targets(
    ds: TextDataset,
    cfg: TextTrainConfig,
    tok: TokenizerConfig,
    vocab: Vocab,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    seqs_tr: list[list[int]],
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """With teachers: (rows, 2K) targets for the training rows (one-hot label, teachers' probabilities; see
    ``distillation_loss``), and the unlabelled sentences' rows appended to ``seqs_tr`` (in place, with a zero
    label part); -> (targets, what was done, for the record). Without: (None, {})."""
    if not cfg.teachers:
        if cfg.unlabelled:
            raise ValueError("--unlabelled sentences need --teacher models to label them")
        return None, {}
    val_texts = [ds.texts[i] for i in val_idx]
    teachers = distillation.teachers(cfg, ds, cfg.split, distillation.TextTeacher, val_texts)
    texts = [ds.texts[i] for i in train_idx]
    k = len(ds.label_names)
    hard = np.eye(k, dtype=np.float32)[ds.labels[train_idx]]
    soft = distillation.ensemble_probs(teachers, texts)
    targets = np.concatenate([hard, soft], axis=1)
    record = distillation.record(teachers, cfg, float((soft.argmax(1) == ds.labels[train_idx]).mean()))
    if cfg.unlabelled and cfg.unlabelled_rows > 0:
        n = min(cfg.unlabelled_rows, cfg.batch_size) if cfg.dry_run else cfg.unlabelled_rows
        draw = np.random.default_rng([cfg.seed, 1])  # its own stream: the run's other draws stay as without it
        sentences = distillation.review_sentences(unsup_texts(Path(cfg.unlabelled)), n, draw, tok)
        seqs_tr.extend(vocab.encode(tokenize(s, tok)) for s in sentences)
        extra = distillation.ensemble_probs(teachers, sentences)
        targets = np.concatenate([targets, np.concatenate([np.zeros_like(extra), extra], axis=1)])
        record["unlabelled"] = {
            "file": Path(cfg.unlabelled).name,
            "sha256": sha256_file(Path(cfg.unlabelled)),
            "sentences": len(sentences),
        }
    log.info("distillation: %s", record)
    return targets.astype(np.float32), record


def train_text(ds: TextDataset, cfg: TextTrainConfig, model_overrides: dict[str, Any]) -> dict:
    seed_everything(cfg)
    rng = np.random.default_rng(cfg.seed)
    tok = TokenizerConfig(max_len=cfg.max_len)
    train_idx, val_idx = split(ds, cfg.split, cfg.val_fraction, cfg.split_seed, tok)
    if cfg.dry_run:
        train_idx, val_idx = train_idx[: cfg.batch_size], val_idx[: cfg.batch_size]
    tokens = {i: tokenize(ds.texts[i], tok)[: cfg.max_len] for i in np.concatenate([train_idx, val_idx])}
    train_idx = worded(ds, train_idx, [tokens[i] for i in train_idx], "training")
    val_idx = worded(ds, val_idx, [tokens[i] for i in val_idx], "validation")
    vocab = Vocab.build((tokens[i] for i in train_idx), min_freq=cfg.min_freq, max_size=cfg.max_vocab)
    vectors, words = None, []
    if cfg.vectors is not None:
        words, vectors, vectors_info = load_vectors(Path(cfg.vectors))
        vocab = merged_vocab(vocab, words, cfg.max_vocab)
        model_overrides = fixed_by_data(model_overrides, {"embed_dim": vectors.shape[1]}, "the word vectors fix")
    seqs_tr = [vocab.encode(tokens[i]) for i in train_idx]
    seqs_va = [vocab.encode(tokens[i]) for i in val_idx]
    y_tr, y_va = ds.labels[train_idx], ds.labels[val_idx]
    targets, distilled = soft_targets(ds, cfg, tok, vocab, train_idx, val_idx, seqs_tr)
    log.info(
        "vocabulary: %d tokens (min_freq %d); %d train / %d validation texts",
        len(vocab),
        cfg.min_freq,
        len(seqs_tr),
        len(seqs_va),
    )

    overrides = fixed_by_data(
        model_overrides, {"vocab_size": len(vocab), "num_classes": len(ds.label_names), "pad_id": PAD_ID}
    )
    model_cfg = models.make_config(cfg.model, **overrides)
    model = models.create_model(cfg.model, model_cfg)
    embedding: dict[str, Any] = {"init": "random"}
    if vectors is not None:
        embedding = start_from_vectors(model, vocab, words, vectors, cfg, rng)
        embedding["source"] = {"folder": cfg.vectors, "sha256": sha256_file(Path(cfg.vectors) / VECTORS)}
        embedding["method"] = vectors_info["method"]
    lengths_tr = np.asarray([len(s) for s in seqs_tr])
    steps_per_epoch = math.ceil(len(seqs_tr) / cfg.batch_size)
    epochs = 1 if cfg.dry_run else cfg.epochs

    y_fit = torch.from_numpy(y_tr) if targets is None else torch.from_numpy(targets)

    noise = torch.Generator().manual_seed(cfg.seed + 2)  # its own stream: the run's other draws stay as without it
    parts, turns = _counterparts(cfg, ds, vocab, words, vectors)
    neg = None
    if cfg.negate > 0:
        if [n.lower() for n in ds.label_names] != ["negative", "positive"]:  # a word's sign is read as the class
            raise ValueError(f"--negate needs the classes negative, positive (in that order), not {ds.label_names}")
        neg = counterfactual.negation(vocab, counterfactual.vader_lexicon())
    negations = torch.Generator().manual_seed(cfg.seed + 4)

    def batches() -> Iterator[Batch]:
        order = rng.permutation(len(seqs_tr))
        for idx in length_bucketed(order, lengths_tr, cfg.batch_size, rng):
            rows, y = [seqs_tr[j] for j in idx], y_fit[idx]
            if neg is not None:
                rows, y = counterfactual.negated(rows, y, cfg.negate, neg, negations)
            ids, lengths = pad_batch(rows)
            if parts is not None:
                ids, y = counterfactual.turned(ids, y, cfg.counterfactual, parts, turns)
            yield (substituted(ids, cfg.substitute, len(vocab), noise), lengths), y

    def validate() -> tuple[float, float]:
        loss, probs = evaluate(model, seqs_va, y_va)
        return loss, float((probs.argmax(1) == y_va).mean())

    t0 = time.perf_counter()
    loss_fn = None if targets is None else distillation.distillation_loss(cfg.teacher_weight, cfg.distill_temperature)
    data = {"sha256": ds.sha256, "labels": ds.label_names, "columns": ds.columns, "tokenizer": tok.model_dump()}
    history, stopper = fit(
        model, cfg, epochs, batches, steps_per_epoch, validate, clip_grad=cfg.clip_grad, loss_fn=loss_fn, data=data
    )
    val_loss, val_probs = evaluate(model, seqs_va, y_va)
    metrics = final_metrics(
        val_probs, y_va, ds.label_names, val_loss, stopper, history, t0, len(train_idx), len(val_idx)
    )
    metrics["embedding_rows_from_vectors"] = embedding.get("rows_from_vectors", 0)
    metrics["val_unk_rate"] = float(np.mean([t == UNK_ID for s in seqs_va for t in s] or [0.0]))
    checkpoint = checkpoint_dict(
        cfg=cfg,
        model=model,
        model_cfg=model_cfg,
        n_train=len(train_idx),
        n_val=len(val_idx),
        metrics=metrics,
        history=history,
        tokenizer=tok.model_dump(),
        vocab=vocab.itos,
        embedding=embedding,
        dataset=ds,
    )
    if distilled:
        checkpoint["distillation"] = distilled
    if parts is not None:
        checkpoint["counterfactual"] = {"chance": cfg.counterfactual, "lexicon": "vaderSentiment", **parts.record()}
    if neg is not None:
        checkpoint["negated"] = {"chance": cfg.negate, "lexicon": "vaderSentiment", **neg.record()}
    return checkpoint


def _counterparts(cfg: TextTrainConfig, ds: TextDataset, vocab: Vocab, words: list[str], vectors: np.ndarray | None):
    """-> (the vocabulary's counterparts, the turns' own random stream), or (None, None) without
    ``counterfactual``; it needs the word vectors and two classes."""
    if cfg.counterfactual <= 0:
        return None, None
    if vectors is None or len(ds.label_names) != 2:
        raise ValueError("--counterfactual needs --vectors and two classes")
    parts = counterfactual.counterparts(vocab, words, vectors, counterfactual.vader_lexicon())
    log.info("counterfactual rows: %s; e.g. %s", parts.record(), dict(list(parts.pairs(vocab).items())[:20]))
    return parts, torch.Generator().manual_seed(cfg.seed + 3)


def _add_args(p: argparse.ArgumentParser) -> None:
    t = TextTrainConfig()
    text = p.add_argument_group("text models")
    text.add_argument("--text-column", help="CSV/TSV column holding the text (default: the preset's)")
    text.add_argument("--label-column", help="CSV/TSV column holding the label (default: the preset's)")
    text.add_argument("--max-len", type=positive, help="tokens kept per text (default: the preset's)")
    text.add_argument("--min-freq", type=int, default=t.min_freq, help="vocabulary: minimum token count")
    text.add_argument("--max-vocab", type=int, default=t.max_vocab, help="vocabulary: maximum size")
    text.add_argument("--split", choices=["random", "sentences"], help="validation split (default: preset's)")
    text.add_argument("--clip-grad", type=float, default=t.clip_grad, help="gradient-norm clipping")
    text.add_argument("--vectors", help="start the embedding from python -m training.word_vectors' folder")
    text.add_argument(
        "--tune-vectors", action="store_true", help="train the pre-trained rows too (default: they stay fixed)"
    )
    d = p.add_argument_group("distillation on unlabelled sentences (text models; --teacher: common flags)")
    d.add_argument("--unlabelled", help="a gzipped CSV of texts (text column) cut into sentences the teachers label")
    d.add_argument("--unlabelled-rows", type=int, default=t.unlabelled_rows, help="unlabelled sentences to add")
    text.add_argument(
        "--substitute", type=float, default=t.substitute, help="chance a training word is replaced by a random one"
    )
    text.add_argument(
        "--counterfactual",
        type=float,
        default=t.counterfactual,
        help="chance a training row is turned into its counterfactual (opinion words swapped, label turned over)",
    )
    text.add_argument(
        "--negate",
        type=float,
        default=t.negate,
        help="chance a row with one opinion word and no negation gets a negation before the word ('not', 'never', "
        "\"n't\", 'no', sometimes with a filler: 'not too bad'), its label turned over",
    )


def _run(args: argparse.Namespace) -> dict:
    if (args.data in (None, "synthetic") and args.dry_run) or args.data == "synthetic":
        ds = synthetic_sentiment()
        preset = TEXT_PRESETS["csv"]
    elif args.data is None:
        raise SystemExit("--data is required (or --dry-run)")
    else:
        name = preset_for(Path(args.data))
        preset = TEXT_PRESETS[name]
        ds = load_table(args.data, name=name, text_column=args.text_column, label_column=args.label_column)
    cfg = TextTrainConfig(
        **common_config(args, TextTrainConfig()),
        split=args.split or preset.split,
        max_len=args.max_len or preset.max_len,
        min_freq=args.min_freq,
        max_vocab=args.max_vocab,
        clip_grad=args.clip_grad,
        vectors=args.vectors,
        freeze_vectors=not args.tune_vectors,
        unlabelled=args.unlabelled,
        unlabelled_rows=args.unlabelled_rows,
        substitute=args.substitute,
        counterfactual=args.counterfactual,
        negate=args.negate,
    )
    log.info(
        "training %s on %s (%d texts, %d classes) with %s",
        args.model,
        ds.name,
        len(ds.labels),
        len(ds.label_names),
        cfg,
    )
    return train_text(ds, cfg, model_args(args))


register_recipe(
    Recipe(
        family="text-classification",
        run=_run,
        plot=lambda ckpt, title, path: plot_curves(ckpt["history"], title, path, "accuracy"),
        summary=accuracy_summary,
        add_args=_add_args,
        distils=True,
        ignores=IMAGE_FLAGS,
        needs=(("tune_vectors", "vectors"), ("unlabelled_rows", "unlabelled")),  # --unlabelled alone: soft_targets
    )
)
