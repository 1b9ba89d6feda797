"""Out of distribution, text classifiers (torch-free): fitted by export/calibrate.py, applied by the service.

A word-level model has two signals about a text unlike its training texts, both read off the token ids it reads:

- ``unknown-token-share``: the share of the tokens outside the vocabulary (random characters, made-up words);
- ``word-rarity``: how rare the words are in the training texts. The vocabulary is sorted by frequency (id =
  rank + 1), and by Zipf's law a word's probability falls as 1 / rank, so log(rank) is its surprisal up to a
  constant; a token's rarity is log(id) / log(V), in (0, 1], an unknown token 1. English of any domain is held
  together by frequent function words; a text in another language is mostly words English reviews hold rarely
  or never, though enough of them appear in a review corpus (IMDB quotes German: "die", "und", "viel") that
  the unknown share alone misses such a text. The component is the tokens' mean rarity shrunk towards the
  typical token's (``centre``) by ``PRIOR_TOKENS`` pseudo-tokens: (sum(r) + P * centre) / (n + P), so that a
  text of two rare names is not judged on two words.

A model's score is the largest of its components, each scaled by (centre, unit) from ``OutOfDistribution.scaling``
to (value - centre) / unit, 1 at its own threshold; the threshold is then 1. An artifact calibrated before word
rarity existed (method ``unknown-token-share``, no scaling) serves the share itself against its own threshold.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

from contract.metadata import OutOfDistribution
from contract.reasons import OodReason
from contract.text import UNK_ID

UNKNOWN, RARITY = "unknown-token-share", "word-rarity"
PRIOR_TOKENS = 4.0  # a text's rarity is its tokens' mean, shrunk towards the typical token's by this many tokens


@functools.lru_cache(maxsize=32)
def _rarity_of_id(vocab_size: int) -> np.ndarray:
    """Every id's rarity (a token's depends only on its id and the vocabulary's size): looked up, not computed."""
    ranks = np.arange(vocab_size, dtype=np.float64)
    ranks[UNK_ID] = vocab_size
    out = np.log(np.maximum(ranks, 1)) / np.log(vocab_size)
    out.flags.writeable = False
    return out


def rarities(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """Each token's rarity, log(rank) / log(V) in (0, 1]: 1 for an unknown token (and for the rarest word)."""
    return _rarity_of_id(vocab_size)[ids]


def unknown_share(ids: np.ndarray, vocab_size: int, centre: float = 0.0) -> float:
    """The share of the tokens outside the vocabulary (a component's signature: size and centre unused)."""
    return np.count_nonzero(ids == UNK_ID) / len(ids) if len(ids) else 1.0


def word_rarity(ids: np.ndarray, vocab_size: int, centre: float = 0.0) -> float:
    """The tokens' mean rarity, shrunk towards ``centre`` (the typical token's) for short texts."""
    return float((rarities(ids, vocab_size).sum() + PRIOR_TOKENS * centre) / (len(ids) + PRIOR_TOKENS))


COMPONENTS: dict[str, Callable[[np.ndarray, int, float], float]] = {UNKNOWN: unknown_share, RARITY: word_rarity}
COMPONENT_REASONS: dict[str, OodReason] = {UNKNOWN: "unknown_words", RARITY: "rare_words"}


def text_ids(windows: Sequence[Sequence[int]]) -> np.ndarray:
    """The ids the model reads (all its windows), as one array."""
    return np.asarray(windows[0] if len(windows) == 1 else [i for w in windows for i in w], dtype=np.int64)


def text_ood_score(ids: np.ndarray, vocab_size: int, ood: OutOfDistribution) -> float:
    """The served ``ood_score`` of a text read as ``ids``: flagged above ``ood.threshold``."""
    return text_ood_answer(ids, vocab_size, ood)[0]


def text_ood_answer(ids: np.ndarray, vocab_size: int, ood: OutOfDistribution) -> tuple[float, OodReason | None]:
    """A text's ``ood_score`` and, where it is flagged, why (contract/reasons.py): unknown words where their share
    alone is past the threshold (an unknown token is also the rarest, so word rarity grows with them), else the
    part that is."""
    if not ood.scaling:  # calibrated before word rarity: the unknown share against its own threshold
        parts = [(unknown_share(ids, vocab_size), UNKNOWN)]
    else:
        parts = [((COMPONENTS[name](ids, vocab_size, c) - c) / u, name) for name, (c, u) in ood.scaling.items()]
        parts.sort(key=lambda part: part[1] != UNKNOWN)
    score, name = max(parts, key=lambda part: part[0])
    if not ood.beyond(score):
        return score, None
    return score, COMPONENT_REASONS[next((n for value, n in parts if ood.beyond(value)), name)]
