"""Counterfactual rows for a two-class sentiment student: each opinion word swapped for its nearest word of the
opposite opinion, the label turned over.

Models trained on film criticism read a drill, a phone or a hotel room as negative: those words turn up in
negative reviews more often, and nothing in the labels says they carry no opinion. Pairs of texts that differ
only in their opinion words and carry opposite labels do say it: every other word sits on both sides
(Kaushik et al. 2020 had people write such counterfactuals and found them to help out of domain; Wang & Culotta
2021 made them automatically, from a lexicon and antonyms).

Here the opinion words and their polarity come from VADER's lexicon (Hutto & Gilbert 2014: 7,500 words rated by
people for social-media text, not film criticism; the ``vaderSentiment`` package's file), and a word's
counterpart is the word of the opposite polarity nearest to it in the student's own word vectors: antonyms share
their contexts, which is what Word2Vec measures ("good" sits beside "bad"). Nearness is cosine corrected for
hubs (CSLS, Conneau et al. 2018: a rare word such as "laughably" is the plain nearest neighbour of dozens of
others), and a counterpart is one of the vectors' most frequent words (``COMMON``). Negations
("not", "n't", "never") are left alone, so "not good" (negative) becomes "not bad" (positive). A row is turned
only when each of its opinion words has a counterpart.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass

import numpy as np
import torch

from contract.text import Vocab
from training.word_vectors import unit_rows

# a word is an opinion word at this mean VADER rating or further from 0 (the scale runs -4 to 4); it has a
# counterpart only this close in the word vectors (cosine), among the COMMON most frequent words of the vectors;
# CSLS's hubness is the mean cosine to a word's HUB_K nearest words of the opposite polarity
MIN_RATING = 1.5
MIN_COSINE = 0.4
COMMON = 5000
HUB_K = 10


# words VADER rates that are more often something else: a preposition ("looks like"), a hedge ("kind of",
# "pretty good"); with English stop words ("no", "well") and VADER's own negations, they are never swapped
NOT_OPINIONS = frozenset({"like", "kind", "pretty"})


def vader_lexicon() -> dict[str, float]:
    """VADER's single-word entries -> mean rating (-4 to 4), without its emoticons and multi-word entries, stop
    words, negations and ``NOT_OPINIONS``."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
    from vaderSentiment.vaderSentiment import NEGATE

    skip = NOT_OPINIONS | ENGLISH_STOP_WORDS | set(NEGATE)
    text = importlib.resources.files("vaderSentiment").joinpath("vader_lexicon.txt").read_text(encoding="utf-8")
    out = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].isalpha() and parts[0].lower() not in skip:
            out[parts[0].lower()] = float(parts[1])
    return out


@dataclass(frozen=True)
class Counterparts:
    """Over a vocabulary's ids: ``to`` maps an opinion word to its counterpart (any other id to itself);
    ``opinion`` marks opinion words, ``lone`` those without a counterpart (a row holding one is not turned)."""

    to: torch.Tensor
    opinion: torch.Tensor
    lone: torch.Tensor

    def pairs(self, vocab: Vocab) -> dict[str, str]:
        return {vocab.itos[i]: vocab.itos[int(self.to[i])] for i in np.flatnonzero(self.opinion & ~self.lone)}

    def record(self) -> dict[str, int]:
        return {"opinion_words": int(self.opinion.sum()), "with_counterpart": int((self.opinion & ~self.lone).sum())}


def counterparts(
    vocab: Vocab,
    words: list[str],
    vectors: np.ndarray,
    lexicon: dict[str, float],
    min_rating: float = MIN_RATING,
    min_cosine: float = MIN_COSINE,
    common: int = COMMON,
) -> Counterparts:
    """Each vocabulary word rated at least ``min_rating`` either way and having a vector -> the nearest (CSLS)
    such word of the opposite sign among the ``common`` first of ``words`` (most frequent first), if at least
    ``min_cosine`` close."""
    row = {w: i for i, w in enumerate(words)}
    ids = np.array(
        [i for i, w in enumerate(vocab.itos) if abs(lexicon.get(w, 0.0)) >= min_rating and w in row], dtype=np.int64
    )
    n = len(vocab)
    to = torch.arange(n)
    opinion = torch.zeros(n, dtype=torch.bool)
    lone = torch.zeros(n, dtype=torch.bool)
    if len(ids) == 0:
        return Counterparts(to, opinion, lone)
    unit = unit_rows(vectors[[row[vocab.itos[i]] for i in ids]].astype(np.float64))
    sims = unit @ unit.T
    sign = np.sign([lexicon[vocab.itos[i]] for i in ids])
    sims[sign[:, None] == sign[None, :]] = -np.inf
    hub = np.sort(sims, axis=1)[:, -HUB_K:]  # -inf where a word has fewer than HUB_K words of the other sign
    found = np.isfinite(hub)
    hubness = np.where(found, hub, 0.0).sum(1) / np.maximum(found.sum(1), 1)
    csls = 2 * sims - hubness[:, None] - hubness[None, :]
    csls[:, [row[vocab.itos[i]] >= common for i in ids]] = -np.inf
    best = csls.argmax(1)
    close = np.isfinite(csls[np.arange(len(ids)), best]) & (sims[np.arange(len(ids)), best] >= min_cosine)
    opinion[ids] = True
    lone[ids[~close]] = True
    to[ids[close]] = torch.from_numpy(ids[best[close]])
    return Counterparts(to, opinion, lone)


def turned(
    ids: torch.Tensor, y: torch.Tensor, chance: float, parts: Counterparts, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch (ids (B, T), targets) with each row that can be turned (an opinion word, none without a
    counterpart) turned with ``chance``: its opinion words swapped, its two classes' targets swapped (integer
    labels 0/1, or (B, 2K) distillation targets whose halves are each two classes)."""
    if chance <= 0:
        return ids, y
    can = parts.opinion[ids].any(1) & ~parts.lone[ids].any(1)
    rows = can & (torch.rand(ids.shape[0], generator=gen) < chance)
    if not rows.any():
        return ids, y
    return torch.where(rows[:, None], parts.to[ids], ids), swapped(y, rows)


def swapped(y: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Targets with the two classes swapped on ``rows`` (bool (B,)): integer labels 0/1, or (B, 2K) distillation
    targets whose halves are each two classes."""
    if y.ndim == 1:
        return torch.where(rows, 1 - y, y)
    swap = torch.arange(y.shape[1]).reshape(-1, 2).flip(1).reshape(-1)
    return torch.where(rows[:, None], y[:, swap], y)


# ---- negated rows ---------------------------------------------------------------------------------------------

# a negation put before an opinion word this strongly rated (the scale runs -4 to 4); rows holding any of VADER's
# negations, these tokens of the tokenizer's, or "no" are left alone (their scope is the reader's guess)
NEGATED_RATING = 1.0
MORE_NEGATIONS = frozenset({"n't", "no", "not"})
# the negation written: one of NEGATORS, then, half of the time, one of FILLERS ("not too bad", "never so dull",
# "n't a bad", "no real complaints" are how reviews say it; the negation rarely sits right before the word)
NEGATORS = ("not", "never", "n't", "no")
FILLERS = ("too", "a", "so", "very", "that", "really")


@dataclass(frozen=True)
class Negation:
    """Over a vocabulary's ids: ``sign`` of each opinion word (+1, -1; 0 for any other word), ``negation`` marks
    the negations; ``negators`` and ``fillers`` are the ids of NEGATORS and FILLERS."""

    sign: torch.Tensor
    negation: torch.Tensor
    negators: tuple[int, ...]
    fillers: tuple[int, ...]

    def record(self) -> dict[str, int]:
        return {"negated_words": int((self.sign != 0).sum())}


def negation(vocab: Vocab, lexicon: dict[str, float], min_rating: float = NEGATED_RATING) -> Negation:
    from vaderSentiment.vaderSentiment import NEGATE

    stoi = {w: i for i, w in enumerate(vocab.itos)}
    missing = [w for w in NEGATORS + FILLERS if w not in stoi]
    if missing:
        raise ValueError(f"negated rows need the words {missing} in the vocabulary")
    sign = torch.zeros(len(vocab), dtype=torch.int8)
    negations = torch.zeros(len(vocab), dtype=torch.bool)
    for w, i in stoi.items():
        rating = lexicon.get(w, 0.0)
        if abs(rating) >= min_rating:
            sign[i] = 1 if rating > 0 else -1
        if w in NEGATE or w in MORE_NEGATIONS:
            negations[i] = True
    return Negation(sign, negations, tuple(stoi[w] for w in NEGATORS), tuple(stoi[w] for w in FILLERS))


def negated(
    seqs: list[list[int]], y: torch.Tensor, chance: float, neg: Negation, gen: torch.Generator
) -> tuple[list[list[int]], torch.Tensor]:
    """A batch's rows (token ids, before padding) and targets with, by ``chance``, a negation put before the opinion
    word of each row that holds exactly one, no negation, and a label of that word's sign ("bad" negative -> "not
    too bad" positive; "a great cast" -> "a never great cast"), its two classes' targets swapped as ``turned``
    swaps them. SST-2's phrases hold few negated opinion words ("not bad" 7 times), so a student learns that a
    negation's presence means negative; these rows say that it turns the word after it."""
    if chance <= 0:
        return seqs, y
    draws = torch.rand(len(seqs), generator=gen)
    which = torch.randint(len(neg.negators), (len(seqs),), generator=gen)
    filler = torch.randint(2 * len(neg.fillers), (len(seqs),), generator=gen)  # past len(fillers): none
    label = y if y.ndim == 1 else (y[:, 0::2] - y[:, 1::2]).sum(1).lt(0).long()  # the classes' evidence, both halves
    out, flip = list(seqs), torch.zeros(len(seqs), dtype=torch.bool)
    for k, s in enumerate(seqs):
        if draws[k] >= chance:
            continue
        row = torch.as_tensor(s, dtype=torch.long)
        where = torch.nonzero(neg.sign[row]).flatten()
        if len(where) != 1 or bool(neg.negation[row].any()):
            continue
        p = int(where[0])
        if (int(neg.sign[s[p]]) > 0) != (int(label[k]) == 1):
            continue
        written = [neg.negators[int(which[k])]]
        if int(filler[k]) < len(neg.fillers):
            written.append(neg.fillers[int(filler[k])])
        out[k] = [*s[:p], *written, *s[p:]]
        flip[k] = True
    if not flip.any():
        return seqs, y
    return out, swapped(y, flip)
