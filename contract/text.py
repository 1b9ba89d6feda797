"""Text contract (torch-free): the tokenizer and vocabulary shared by training, export and the service.

Tokenisation follows the Penn Treebank conventions the SST-2 corpus was written in, so that users' raw
text ("don't", "it's", “quotes”) produces the same tokens as the training phrases ("do n't", "it 's"):

    "I didn't love it—it's <b>GREAT</b>!!"  ->  i did n't love it — it 's great ! !
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
VOCAB_FILE = "vocab.json"

# a tag: "<" then a letter, "/" or "!" ("<br />", "</b>", "<!-- -->"); "<3", "<- see below ->" and ">.<" are text
_HTML = re.compile(r"</?[A-Za-z!][^<>]{0,200}>")
_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "«": '"', "»": '"', "‘": "'", "’": "'", "‚": "'", "`": "'"})
_NEGATION = re.compile(r"(?<=[^\W_])n't\b")  # don't -> do n't, can't -> ca n't (PTB)
_CLITIC = re.compile(r"(?<=[^\W_])'(s|re|ve|ll|d|m)\b")  # it's -> it 's
# a token: a clitic, a word (letters/digits, inner hyphens or apostrophes kept), or one other visible char
_QUOTE_CHARS = frozenset(map(chr, _QUOTES))
_PTB_QUOTES = re.compile("``|''")
_ASCII_CONTROLS = {c: " " for c in [*range(32), 127]}
_TOKEN = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|[^\W_]+(?:[-'][^\W_]+)*|[^\w\s]|_", re.UNICODE)
# Unicode's stream-safe text format (UAX #15) allows 30 non-starters (combining marks) in a row, which no
# writing needs more of; normalising a longer run costs time that grows with its square (canonical reordering),
# and finding the places of its tokens with its cube, so marks past the 30th of a run are dropped first: 10,000
# stacked accents cost what 30 do. A cluster normalised as one (``_clusters``) holds at most MAX_CLUSTER characters.
MAX_MARKS = 30
MAX_CLUSTER = 64


class TokenizerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lowercase: bool = True
    normalization: Literal["NFC", "NFD", "NFKC", "NFKD"] = Field("NFKC", description="Unicode normalisation first")
    strip_html: bool = True
    max_len: int = Field(64, ge=1, description="tokens per row: a longer text is read in windows of max_len tokens")


@functools.lru_cache(maxsize=8192)
def _marks(c: str) -> tuple[int, int, bool]:
    """A character's compatibility decomposition's leading and trailing non-starters (combining class not 0),
    and whether it is nothing else (a combining mark, a half-width voicing mark)."""
    d = unicodedata.normalize("NFKD", c)
    lead = next((k for k, x in enumerate(d) if not unicodedata.combining(x)), len(d))
    if lead == len(d):
        return lead, lead, True
    trail = next(k for k, x in enumerate(reversed(d)) if not unicodedata.combining(x))
    return lead, trail, False


def _kept(text: str) -> list[bool]:
    """Per character of a non-ASCII text: is it kept (not a non-starter past the MAX_MARKS-th of a run)?"""
    kept, run = [], 0
    for c in text:
        lead, trail, only = _marks(c)
        if only:
            run += lead
            kept.append(run <= MAX_MARKS)
        else:
            run = trail
            kept.append(True)
    return kept


def _all_kept(text: str) -> bool:
    """Can no run of non-starters in ``text`` pass MAX_MARKS? True when its pure marks' non-starters, all of them,
    after the most that any other character ends with, are at most MAX_MARKS: ``_kept`` would keep every
    character, and it is not run (a per-character loop: most of a long review's tokenising time)."""
    marks, tail = 0, 0
    for c in set(text):
        lead, trail, only = _marks(c)
        if only:
            marks += lead * text.count(c)
            if marks > MAX_MARKS:  # past the bound already: no more counting (917 kinds of mark, 917 passes)
                return False
        else:
            tail = max(tail, trail)
    return marks + tail <= MAX_MARKS


def stream_safe(text: str, kept: list[bool] | None = None) -> str:
    """``text`` without the combining marks past the MAX_MARKS-th of a run (``kept``: its ``_kept``, if known)."""
    if text.isascii() or (kept is None and _all_kept(text)):
        return text
    return "".join(c for c, k in zip(text, kept or _kept(text), strict=True) if k)


# The combining marks of no script (Combining Diacritical Marks and their Extended and Supplement blocks, those
# for symbols, the half marks, the variation selectors): where normalisation leaves one unjoined (an underline or
# a strike-through over each letter, the dot lowercasing leaves of "İ", an emoji's variation selector, a keycap)
# it is dropped, not read as a token that splits the word it marks. A script's own marks (Devanagari's vowel
# signs, Thai's tones) are part of its words and stay.
_STRAY_MARKS = re.compile(
    "[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe00-\ufe0f\ufe20-\ufe2f\U000e0100-\U000e01ef]"
)


def tokenize(text: str, cfg: TokenizerConfig) -> list[str]:
    """Raw text of any Unicode -> PTB-style tokens (never raises; control characters, combining marks past the
    MAX_MARKS-th of a run, and the marks of no script that normalisation leaves unjoined, are dropped)."""
    return _tokens(stream_safe(text), cfg)


def _tokens(text: str, cfg: TokenizerConfig) -> list[str]:
    """``tokenize`` of a text already stream-safe."""
    text = unicodedata.normalize(cfg.normalization, text)
    if text.isascii():  # the ASCII characters of category C are these (two thirds of the time otherwise)
        text = text.translate(_ASCII_CONTROLS)
    else:  # NUL, controls, NEL, format characters: each distinct one looked up once
        controls = {ord(c): " " for c in set(text) if unicodedata.category(c)[0] == "C"}
        if controls:
            text = text.translate(controls)
    if cfg.strip_html:
        text = _HTML.sub(" ", text)
    text = text.replace("``", '"').replace("''", '"')
    if text.isascii() or not _QUOTE_CHARS.isdisjoint(text):  # a dict per character of a text that needs none
        text = text.translate(_QUOTES)
    if cfg.lowercase:
        text = text.lower()
    if not text.isascii():
        text = _STRAY_MARKS.sub("", text)
    text = _NEGATION.sub(" n't", text)
    text = _CLITIC.sub(r" '\1", text)
    return _TOKEN.findall(text)


Places = list[tuple[int, int]]  # per character of a rewritten text: the span of the original it stands for


def _sub(pattern: re.Pattern[str], repl: str, text: str, where: Places) -> tuple[str, Places]:
    """``pattern.sub(repl, text)`` that carries ``where`` along: a replacement that ends with the matched text
    (a space put before a clitic) keeps the match's places; any other stands for the whole match."""
    out, places, last = [], [], 0
    for m in pattern.finditer(text):
        out.append(text[last : m.start()])
        places += where[last : m.start()]
        new = m.expand(repl)
        whole = (where[m.start()][0], where[m.end() - 1][1])
        if new.endswith(m.group()):
            places += [whole] * (len(new) - len(m.group())) + where[m.start() : m.end()]
        else:
            places += [whole] * len(new)
        out.append(new)
        last = m.end()
    out.append(text[last:])
    places += where[last:]
    return "".join(out), places


def _clusters(text: str, form: str, kept: list[bool]) -> list[tuple[int, int, str]]:
    """(start, end, characters): each character with what normalisation would join to it (combining marks, a
    half-width voicing mark, a jamo), up to MAX_CLUSTER, so that normalising cluster by cluster gives what
    normalising the whole text gives; a mark ``stream_safe`` drops is left out, its place joined to the cluster
    before it."""
    out: list[tuple[int, int, str]] = []
    for i, (c, keep) in enumerate(zip(text, kept, strict=True)):
        if not keep:
            if out:
                out[-1] = (out[-1][0], i + 1, out[-1][2])
            continue
        if out and len(out[-1][2]) < MAX_CLUSTER and not unicodedata.category(out[-1][2][-1]).startswith("C"):
            prev = out[-1][2]
            joined = unicodedata.normalize(form, prev + c)  # type: ignore[arg-type]
            if unicodedata.combining(c) or joined != unicodedata.normalize(form, prev) + unicodedata.normalize(form, c):  # type: ignore[arg-type]
                out[-1] = (out[-1][0], i + 1, prev + c)
                continue
        out.append((i, i + 1, c))
    return out


def _lower(text: str, where: Places) -> tuple[str, Places]:
    low = text.lower()
    if len(low) == len(text):
        return low, where
    chars, places = [], []
    for c, place in zip(text, where, strict=True):
        lc = c.lower()
        chars.append(lc)
        places += [place] * len(lc)
    return "".join(chars), places


def tokenize_spans(text: str, cfg: TokenizerConfig) -> list[tuple[str, int | None, int | None]]:
    """``tokenize`` with where each token came from: (token, start, end), ``text[start:end]`` being the
    characters it was made of, so a page can highlight them. The tokens are ``tokenize``'s, and its steps are
    replayed in its order with each character's place carried along; normalisation runs cluster by cluster
    (``_clusters``). Should the places still come out as a different number of tokens (never on the training
    corpora; about 0.5 % of random strings of combining marks and other rare characters, such as
    "a\u0f75\u0308\u2019", where normalising the whole text composes across what the clusters split), start and
    end are None rather than a guess (as where the places come out as other tokens)."""
    if text.isascii():  # normalisation changes no ASCII character, lowercasing none's length: one to one
        view = text.translate(_ASCII_CONTROLS)
        where: Places = [(i, i + 1) for i in range(len(text))]
        tokens = _tokens(text, cfg)
    else:
        kept = _kept(text)
        tokens = _tokens(stream_safe(text, kept), cfg)
        chars: list[str] = []
        where = []
        for start, end, c in _clusters(text, cfg.normalization, kept):
            n = unicodedata.normalize(cfg.normalization, c)
            chars.append("".join(" " if unicodedata.category(x)[0] == "C" else x for x in n))
            where += [(start, end)] * len(n)
        view = "".join(chars)
    if cfg.strip_html:
        view, where = _sub(_HTML, " ", view, where)
    view, where = _sub(_PTB_QUOTES, '"', view, where)
    view = view.translate(_QUOTES)
    if cfg.lowercase:
        view, where = _lower(view, where)
    if not view.isascii():
        view, where = _sub(_STRAY_MARKS, "", view, where)
    view, where = _sub(_NEGATION, " n't", view, where)
    view, where = _sub(_CLITIC, r" '\1", view, where)
    found = list(_TOKEN.finditer(view))
    if [m.group() for m in found] != tokens:  # the same tokens, not only as many (a review's: "Kﾞ́" once matched)
        return [(t, None, None) for t in tokens]
    return [(t, where[m.start()][0], where[m.end() - 1][1]) for t, m in zip(tokens, found, strict=True)]


# English function words (articles, pronouns, prepositions, conjunctions, auxiliaries, the PTB clitics): a text
# made of these and punctuation alone ("...", "the", "it is") says nothing about its sentiment, whatever a
# graph trained on SST-2's sub-phrases makes of it ("..." read 85 % positive). Negations are not among them.
_FUNCTION_WORDS = (
    "a an the this that these those there here it its i me my mine we us our you your he him his she her they them"
    " their what which who whom whose when where why how and or but nor if then so as of to in on at by for with"
    " from into onto about over under up down out off than too also just is am are was were be been being have has"
    " had do does did will would shall should can could may might must 's 're 've 'd 'll 'm"
)
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())


def is_word(token: str) -> bool:
    """Does this token carry meaning of its own: a letter or digit in it, and not a function word?"""
    return any(c.isalnum() for c in token) and token.lower() not in FUNCTION_WORDS  # a model may keep case


class Vocab:
    """Token <-> id with ``<pad>`` = 0 and ``<unk>`` = 1; built from training texts only."""

    def __init__(self, itos: list[str]) -> None:
        if itos[:2] != [PAD, UNK]:
            raise ValueError("a vocabulary starts with <pad>, <unk>")
        self.itos = itos
        self.stoi = {t: i for i, t in enumerate(itos)}
        if len(self.stoi) != len(itos):
            raise ValueError("duplicate tokens in vocabulary")

    def __len__(self) -> int:
        return len(self.itos)

    @classmethod
    def build(cls, token_lists: Iterable[list[str]], *, min_freq: int = 2, max_size: int = 30_000) -> Vocab:
        counts = Counter(t for tokens in token_lists for t in tokens)
        kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        return cls([PAD, UNK, *kept[: max_size - 2]])

    def encode(self, tokens: list[str]) -> list[int]:
        return [self.stoi.get(t, UNK_ID) for t in tokens]

    def decode(self, ids: list[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    @functools.cached_property
    def words(self) -> np.ndarray:
        """(V,) bool: which ids are words (``is_word``): a text read as ids holds one where ``words[ids].any()``."""
        out = np.fromiter((is_word(t) for t in self.itos), dtype=bool, count=len(self.itos))
        out[:2] = False  # <pad>, <unk>
        out.flags.writeable = False
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.itos, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))


def encode_text(text: str, cfg: TokenizerConfig, vocab: Vocab) -> tuple[list[int], int, bool]:
    """-> (ids of at most max_len tokens, tokens before truncation, truncated); no tokens gives no ids."""
    tokens = tokenize(text, cfg)
    return vocab.encode(tokens[: cfg.max_len]), len(tokens), len(tokens) > cfg.max_len


TEXT_IDS, TEXT_LENGTHS = "ids", "lengths"  # a text classifier graph's inputs: padded token ids, lengths
DEFAULT_WINDOWS = 8  # windows of max_len tokens read per text (the service's NNSERVE_TEXT_WINDOWS)


class Windows(NamedTuple):
    """A text as a model reads it (``encode_windows``)."""

    windows: list[list[int]]  # ids in consecutive windows of at most max_len tokens
    tokens: int  # the text's token count (``sum(map(len, windows))`` were read)
    evidence: np.ndarray  # the ids read but those of unknown symbols: what the text's out-of-distribution score reads


def encode_windows(text: str, cfg: TokenizerConfig, vocab: Vocab, max_windows: int = DEFAULT_WINDOWS) -> Windows:
    """A text -> its ``Windows``: at most ``max_windows`` windows. A text longer than max_len is read window by
    window and the windows' logits combined (``combine_windows``); only a text over max_windows windows is cut.
    The evidence leaves out unknown tokens without a letter or digit (an emoji, a star, a keycap): reviews are
    full of them and the training texts hold few, so they say the text is unlike the training texts' words no more
    than punctuation does (an English review of five words and five emoji read as half unknown was flagged)."""
    tokens = tokenize(text, cfg)
    ids = vocab.encode(tokens)
    step = cfg.max_len
    read = min(len(ids), step * max_windows)
    evidence = np.asarray(ids[:read], dtype=np.int64)
    if UNK_ID in ids[:read]:
        evidence = evidence[
            [i != UNK_ID or any(c.isalnum() for c in t) for t, i in zip(tokens, ids[:read], strict=False)]
        ]
    return Windows([ids[i : i + step] for i in range(0, read, step)], len(ids), evidence)


def combine_windows(logits: np.ndarray, sizes: Sequence[Sequence[int]]) -> np.ndarray:
    """(R, K) logits of the rows of several texts, in order, and each text's window sizes -> (N, K): each text's
    windows averaged with their token counts as weights."""
    out, start = [], 0
    for text_sizes in sizes:
        w = np.asarray(text_sizes, dtype=np.float64)
        out.append((logits[start : start + len(w)].astype(np.float64) * (w / w.sum())[:, None]).sum(0))
        start += len(w)
    return np.asarray(out, dtype=np.float32)


def text_logits(
    sess: Any,
    texts: list[str],
    cfg: TokenizerConfig,
    vocab: Vocab,
    batch: int = 256,
    windows: int = DEFAULT_WINDOWS,
) -> np.ndarray:
    """Raw texts -> (N, K) logits of a text classifier's graph as the service computes them: tokenised, read
    in windows of max_len tokens (``windows`` at most), the windows' logits combined. ``sess``: an onnxruntime
    session (anything with its ``run``), so that this module needs no runtime."""
    encoded = [encode_windows(t, cfg, vocab, windows).windows for t in texts]
    rows = [w for text_windows in encoded for w in text_windows or [[UNK_ID]]]
    order = np.argsort([len(r) for r in rows], kind="stable")  # similar lengths together: little padding
    out = np.zeros((len(rows), 0), dtype=np.float32)
    for i in range(0, len(rows), batch):
        idx = order[i : i + batch]
        ids, lengths = pad_right([rows[j] for j in idx])
        (logits,) = sess.run(["logits"], {TEXT_IDS: ids, TEXT_LENGTHS: lengths})
        if out.shape[1] == 0:
            out = np.zeros((len(rows), logits.shape[1]), dtype=np.float32)
        out[idx] = logits
    return combine_windows(out, [[len(w) for w in text_windows] or [1] for text_windows in encoded])


def pad_right(seqs: Sequence[Sequence[int] | np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Token-id sequences -> ids (B, T) int64 right-padded with <pad> to the longest, lengths (B,) int64.

    The one layout training, evaluation and the service feed the recurrent graphs.
    """
    lengths = np.asarray([len(s) for s in seqs], dtype=np.int64)
    ids = np.full((len(seqs), int(lengths.max())), PAD_ID, dtype=np.int64)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = seq
    return ids, lengths
