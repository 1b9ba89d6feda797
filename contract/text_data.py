"""Text datasets: SST-2 (GLUE TSV), IMDB (CSV) and users' own CSV/TSV files, with deterministic splits."""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contract.data import DataError, stratified_split
from contract.metadata import ModelMetadata, sha256_file
from contract.text import TokenizerConfig, tokenize

log = logging.getLogger(__name__)
SENTIMENT_LABELS = ["negative", "positive"]


@dataclass(frozen=True)
class TextPreset:
    text_column: str
    label_column: str
    labels: list[str] | None  # None: the sorted distinct values of the label column
    split: str  # "random" | "sentences"
    max_len: int


PRESETS: dict[str, TextPreset] = {
    "sst2": TextPreset("sentence", "label", SENTIMENT_LABELS, "sentences", 64),
    "imdb": TextPreset("text", "label", SENTIMENT_LABELS, "random", 400),
    "csv": TextPreset("text", "label", None, "random", 128),
}


@dataclass
class TextDataset:
    texts: list[str]
    labels: np.ndarray  # (N,) int64
    label_names: list[str]
    name: str
    source: str
    sha256: dict[str, str] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)  # a table's {"text": ..., "label": ...} columns read


def preset_for(path: Path) -> str:
    """The preset of a file by its folder or stem named for it (``.../sst2/train.tsv``, ``imdb.csv``), never by a
    word inside a name or a folder further up ("crosstab_reviews.csv", "not_imdb/reviews.csv",
    "~/imdb/work/reviews.csv" are the user's own: ``csv``)."""
    names = {path.parent.name.lower(), path.name.split(".")[0].lower()}
    return "sst2" if names & {"sst2", "sst-2"} else "imdb" if "imdb" in names else "csv"


def load_table(
    path: str | Path, *, name: str, text_column: str | None = None, label_column: str | None = None
) -> TextDataset:
    """A CSV (RFC 4180) or TSV file with a header row, in UTF-8 (a spreadsheet's byte-order mark allowed); the
    delimiter follows the file suffix. A row whose text is empty is left out (with a warning): the service
    answers no empty text, so there is nothing to learn from it."""
    path = Path(path)
    preset = PRESETS[name]
    text_col, label_col = text_column or preset.text_column, label_column or preset.label_column
    with _table(path) as reader:
        rows = _with_text(_rows(reader, path, text_col, label_col), path)
    raw_labels = sorted({lbl for _, lbl, _ in rows})
    if len(raw_labels) < 2:
        raise DataError(f"{path}: a classifier needs two or more labels; {label_col!r} holds {raw_labels}")
    names = preset.labels if preset.labels is not None else raw_labels
    if preset.labels is not None:  # numeric labels index the preset's names
        index = {str(i): i for i in range(len(names))}
    else:
        index = {lbl: i for i, lbl in enumerate(raw_labels)}
    unknown = set(raw_labels) - set(index)
    if unknown:
        raise DataError(f"{path}: label values {sorted(unknown)} are not in {sorted(index)}")
    return TextDataset(
        [t for t, _, _ in rows],
        np.asarray([index[lbl] for _, lbl, _ in rows], dtype=np.int64),
        list(names),
        name,
        str(path),
        {path.name: sha256_file(path)},
        {"text": text_col, "label": label_col},
    )


@contextmanager
def _table(path: Path) -> Iterator[csv.DictReader]:
    """A CSV (RFC 4180) or TSV file, by its suffix, as a DictReader of its rows under its header, read as UTF-8 (a
    spreadsheet's byte-order mark allowed; bytes that are not UTF-8 are a DataError naming their line), with no
    limit on a field's length (a review may be longer than csv's 128 KiB)."""
    csv.field_size_limit(sys.maxsize)
    if path.is_dir():
        raise DataError(f"{path} is a folder: a text model reads a CSV or TSV file (a folder of images: image models)")
    with open(path, encoding="utf-8-sig", newline="") as f:
        try:
            # SST-2's TSV is unquoted (no '"' anywhere); QUOTE_NONE keeps its apostrophes and backticks intact
            yield (
                csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                if path.suffix.lower() == ".tsv"
                else csv.DictReader(f)
            )
        except UnicodeDecodeError:
            raise DataError(f"{path}: {_not_utf8(path.read_bytes())}; save it as UTF-8") from None


def _rows(reader: csv.DictReader, path: Path, text_col: str, label_col: str) -> list[tuple[str, str, int]]:
    """A table's rows under its header as (text, label, first line), read the one way training and evaluation
    share: both columns named once each, every row with the header's fields and a label (a DataError naming the
    line otherwise; ``_row``)."""
    if text_col == label_col:  # accepted, it measured a model on its own labels (accuracy 1.0; an audit's)
        raise DataError(f"{path}: {text_col!r} cannot be both the text column and the label column")
    if reader.fieldnames is None:
        raise DataError(f"{path} is empty: it needs a header row naming columns {text_col!r} and {label_col!r}")
    if not {text_col, label_col} <= set(reader.fieldnames):
        raise DataError(f"{path}: needs columns {text_col!r} and {label_col!r}; has {reader.fieldnames}")
    fields = list(reader.fieldnames)
    twice = sorted({c for c in (text_col, label_col) if fields.count(c) > 1})
    if twice:  # the reader keeps a repeated name's last column: the wrong labels, silently (a CLI audit's)
        raise DataError(f"{path}: the header names column {twice[0]!r} more than once; which is meant?")
    read, start = [], reader.line_num + 1  # a row's first line: a quoted text may run over several
    for r in reader:
        read.append(_row(r, text_col, label_col, path, (start, reader.line_num), len(fields)))
        start = reader.line_num + 1
    return read


def _with_text(read: list[tuple[str, str, int]], path: Path) -> list[tuple[str, str, int]]:
    """The rows whose text is not empty, with a warning naming the first left out: the service answers no empty
    text, so there is nothing to learn from it or to measure on it."""
    rows = [row for row in read if row[0].strip()]
    if len(rows) < len(read):
        empty = [line for t, _, line in read if not t.strip()]
        more = " ..." if len(empty) > 1 else ""
        log.warning("%s: %d rows with no text left out (line %s%s)", path, len(empty), empty[0], more)
    return rows


def _not_utf8(raw: bytes) -> str:
    """Where bytes that are not UTF-8 are first not: the byte and its line (a gzip file said to be one)."""
    if raw[:2] == b"\x1f\x8b":  # gzip's magic number (RFC 1952): "line 1 holds byte b'\x8b'" named no cause
        return "a gzip file, not a table: unpack it first (gunzip)"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        return f"line {line} holds byte {raw[e.start : e.start + 1]!r}, not UTF-8 text"
    return "not UTF-8 text"


def _row(
    r: dict, text_col: str, label_col: str, path: Path, lines: tuple[int, int], fields: int
) -> tuple[str, str, int]:
    """One row of a table (its first and last lines) as (text, label, its first line), or a DataError naming its
    line: a row with more or fewer fields than the header (a TSV is read without quotes, so a tab inside a text
    splits it; in a CSV, a quote that never closes swallows the lines after it), or without a label."""
    line, last = lines
    extra, missing = r.pop(None, None) or [], sum(v is None for v in r.values())  # csv.DictReader's way
    if extra or missing:
        hint = " (a TSV is read without quotes: a tab inside a text splits it)" if path.suffix.lower() == ".tsv" else ""
        if last > line:  # one quoted field ran over lines: where it opened is the mistake, not where it stopped
            hint = f" (the row runs to line {last}: does a quote on line {line} close?)"
        raise DataError(f"{path}, line {line}: {fields + len(extra) - missing} fields, the header has {fields}{hint}")
    label = r[label_col].strip()
    if not label:
        raise DataError(f"{path}, line {line}: no label in {label_col!r}")
    return r[text_col], label, line


def _proper_spans(tokens: list[tuple[str, ...]]) -> set[int]:
    """Hashes of every contiguous span, shorter than its row, of every row. A collision (never seen; the sets
    hold ~1.5 M hashes of 64 bits) could only make a row look contained in another: a sentence left out of the
    validation candidates, or a phrase left out of training; never a leak."""
    spans: set[int] = set()
    for ts in tokens:
        n = len(ts)
        spans.update(hash(ts[a:b]) for a in range(n) for b in range(a + 1, n + 1) if b - a < n)
    return spans


def sentence_rows(tokens: list[tuple[str, ...]]) -> np.ndarray:
    """Indices of the rows that are whole sentences: contained in no other row."""
    contained = _proper_spans(tokens)
    return np.asarray([i for i, ts in enumerate(tokens) if ts and hash(ts) not in contained], dtype=np.int64)


def phrase_split(
    texts: list[str], val_fraction: float, seed: int, tok: TokenizerConfig
) -> tuple[np.ndarray, np.ndarray]:
    """A leak-free validation set of whole sentences for phrase-level corpora such as SST-2.

    SST-2's train file holds every sentence of its parse trees *and every sub-phrase*. A sentence is a row
    contained in no other row (a root). Validation takes ``val_fraction`` of the roots; every row that is a
    contiguous span of a validation sentence (its phrases, and copies of it) leaves training, so no training
    row lies inside a validation sentence and no validation sentence lies inside a training row. A phrase
    shared by a training and a validation sentence goes with the validation one (it is dropped). Validation
    is reported on the whole sentences only, as the official dev and test sets are.
    """
    tokens = [tuple(tokenize(t, tok)) for t in texts]
    roots = sentence_rows(tokens)
    rng = np.random.default_rng(seed)
    val = np.sort(rng.permutation(roots)[: round(len(roots) * val_fraction)])
    held = _proper_spans([tokens[i] for i in val]) | {hash(tokens[i]) for i in val}
    train = np.asarray([i for i, ts in enumerate(tokens) if ts and hash(ts) not in held], dtype=np.int64)
    log.info(
        "phrase split: %d sentences, %d of them for validation; %d training rows (%d phrases of validation "
        "sentences left out)",
        len(roots),
        len(val),
        len(train),
        len(texts) - len(val) - len(train),
    )
    return train, val


def dedup_split(texts: list[str], labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified split of the distinct texts: a text that occurs twice is kept once (its first row), so no
    review is on both sides (IMDB's train file holds 96 repeated reviews)."""
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        first.setdefault(t.strip(), i)
    keep = np.asarray(sorted(first.values()), dtype=np.int64)
    counted = "rows" if len(keep) == len(texts) else f"distinct texts (of {len(texts)} rows)"
    train, val = stratified_split(labels[keep], val_fraction, seed, counted)
    if len(keep) < len(texts):
        log.info("split: %d repeated texts kept once", len(texts) - len(keep))
    return keep[train], keep[val]


def split(
    ds: TextDataset, how: str, val_fraction: float, seed: int, tok: TokenizerConfig
) -> tuple[np.ndarray, np.ndarray]:
    if how == "sentences":
        return phrase_split(ds.texts, val_fraction, seed, tok)
    return dedup_split(ds.texts, ds.labels, val_fraction, seed)


def labelled_texts(path: Path, labels: list[str], columns: list[tuple[str, str]]) -> tuple[list[str], np.ndarray]:
    """A CSV/TSV of texts labelled as a model names its labels (or by their index) -> texts and label indices,
    read from the first (text, label) pair of ``columns`` the file has; DataError naming the file (and line) for
    what cannot be read so."""
    index = {**{str(i): i for i in range(len(labels))}, **{n: i for i, n in enumerate(labels)}}
    try:
        with _table(path) as reader:
            fields = set(reader.fieldnames or [])
            text_col, label_col = next((c for c in columns if set(c) <= fields), columns[0])
            rows = _with_text(_rows(reader, path, text_col, label_col), path)
    except OSError as e:
        raise DataError(f"{path}: {e.strerror or e}") from None
    for _, label, line in rows:
        if label not in index:
            raise DataError(f"{path}, line {line}: label {label!r} is not one of {labels}")
    return [t for t, _, _ in rows], np.asarray([index[lbl] for _, lbl, _ in rows], dtype=np.int64)


def text_validation(meta: ModelMetadata, data: Path) -> tuple[list[str], np.ndarray]:
    """A CSV/TSV training file -> the validation texts and labels of the split model.json records."""
    name = meta.dataset.name if meta.dataset.name in PRESETS else preset_for(data)
    cols = meta.dataset.columns
    ds = load_table(data, name=name, text_column=cols.get("text"), label_column=cols.get("label"))
    how = "sentences" if meta.dataset.split == "sentences" else "random"
    tok = meta.text_preprocessing().tokenizer
    _, val = split(ds, how, meta.dataset.val_fraction, meta.dataset.split_seed, tok)
    val = worded(ds, val, [tokenize(ds.texts[i], tok) for i in val], "validation")  # as training
    return [ds.texts[i] for i in val], ds.labels[val]


def worded(ds: TextDataset, rows: np.ndarray, tokens: list[list[str]], side: str) -> np.ndarray:
    """The rows (with their tokens) that hold a word: a text of no token (markup alone, "<br /><br />"; punctuation
    is a token) would be trained or measured as one unknown word with its row's label. Those left out are counted
    in the log; a side left with no row is a DataError."""
    kept = np.asarray([bool(t) for t in tokens], dtype=bool)
    if not kept.all():
        first = ds.texts[rows[~kept][0]][:80]
        log.warning("%s: %d %s rows hold no word and are left out, e.g. %r", ds.source, (~kept).sum(), side, first)
    if not kept.any():
        raise DataError(f"{ds.source}: no {side} row holds a word")
    return rows[kept]


def synthetic_sentiment(n: int = 600, seed: int = 0) -> TextDataset:
    """A tiny generated review corpus for ``--dry-run`` and tests: learnable, varied in length, offline."""
    rng = np.random.default_rng(seed)
    pos = ["great", "wonderful", "moving", "brilliant", "charming", "funny", "delightful", "superb"]
    neg = ["awful", "boring", "dull", "terrible", "clumsy", "tedious", "painful", "lifeless"]
    nouns = ["movie", "film", "story", "cast", "script", "plot", "ending", "soundtrack"]
    fillers = ["honestly", "i think", "all in all", "to be fair", "after the first hour", "frankly"]
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = pos if label else neg
        parts = [f"the {rng.choice(nouns)} is {rng.choice(words)}"]
        for _ in range(int(rng.integers(0, 4))):
            parts.append(f"{rng.choice(fillers)} the {rng.choice(nouns)} was {rng.choice(words)}")
        texts.append(" , ".join(parts) + " .")
        labels.append(label)
    return TextDataset(
        texts,
        np.asarray(labels, dtype=np.int64),
        list(SENTIMENT_LABELS),
        "synthetic-sentiment",
        "contract.text_data.synthetic_sentiment",
    )
