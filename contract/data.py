"""Datasets as in-memory uint8 tensors: MNIST-format IDX files, image folders, scikit-learn's digits.

Every reader returns a ``Dataset`` whose images are already in the model's pixel convention
(uint8, (N, C, H, W)), produced by the same ``contract.images.prepare_image`` the service uses.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import struct
import unicodedata
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from contract.images import ACCEPTED_FORMATS, NOT_AN_IMAGE, prepare_image
from contract.metadata import ImagePreprocessing, ModelMetadata, sha256_file

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Data that cannot be trained or measured on as given, the file and line named: the command-line tools
    print it as one line, not a traceback."""


FASHION_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGIT_LABELS = [str(i) for i in range(10)]
# what the service decodes (contract.images.decode_image); .jfif and .jpe are JPEGs (Windows' browsers save .jfif)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jfif", ".jpe", ".webp"}
# pictures in other formats a class folder may hold: left out with a warning that says to convert them
OTHER_PICTURES = {".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif", ".svg", ".ico", ".jp2"}


@dataclass(frozen=True)
class DatasetPreset:
    """What a known dataset implies for labels, preprocessing and augmentation."""

    labels: list[str] | None  # None: taken from the data (image folders)
    white_on_black: bool
    fit: str
    augment: str  # see training.augment.PRESETS


PRESETS: dict[str, DatasetPreset] = {
    "mnist": DatasetPreset(DIGIT_LABELS, True, "digit", "digits"),
    "fashion-mnist": DatasetPreset(FASHION_LABELS, True, "contain", "objects"),
    "sklearn-digits": DatasetPreset(DIGIT_LABELS, True, "digit", "digits"),
    "image-folder": DatasetPreset(None, False, "resize", "objects"),
}


@dataclass
class Dataset:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64
    label_names: list[str]
    name: str
    source: str
    sha256: dict[str, str] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)  # a table's columns (TextDataset's); none for images


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): big-endian magic (0, 0, dtype, ndim), ndim uint32 sizes, data."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # a download cut short: one line, not a traceback
        raise DataError(f"{path}: not a whole gzip file ({e})") from None
    if len(raw) < 4 or len(raw) < 4 + 4 * raw[3]:
        raise DataError(f"{path}: {len(raw)} bytes, shorter than an IDX file's header")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {data.size} bytes")
    return data.reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for cand in (root / f"{stem}.gz", root / stem):
        if cand.exists():
            return cand
    raise FileNotFoundError(f"{root}: no {stem}[.gz]")


def load_idx_dataset(root: str | Path, name: str) -> Dataset:
    root = Path(root)
    img_path, lbl_path = _find(root, "train-images-idx3-ubyte"), _find(root, "train-labels-idx1-ubyte")
    images, labels = read_idx(img_path), read_idx(lbl_path).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{root}: {len(images)} images but {len(labels)} labels")
    preset = PRESETS[name]
    assert preset.labels is not None
    return Dataset(
        images[:, None].copy(),
        labels,
        list(preset.labels),
        name,
        str(root),
        {p.name: sha256_file(p) for p in (img_path, lbl_path)},
    )


def _utf8(name: str) -> bool:
    """Is a file name text (not bytes of another encoding, which Python holds as lone surrogates)?"""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def load_image_folder(root: str | Path, pre: ImagePreprocessing) -> Dataset:
    """``root/<class name>/*.png|jpg|webp``: one sub-folder per class, classes in sorted order. A file that is not
    an image it can read is left out with a warning naming it, as are pictures in formats the service does not
    read (counted by suffix) and a class sub-folder without images; fewer than two classes with images is an
    error (DataError)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected one sub-folder of images per class)")
    classes: list[str] = []
    images: list[np.ndarray] = []
    labels: list[int] = []
    unread: list[str] = []
    hidden: list[str] = []
    other: dict[str, int] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if not is_class_folder(folder):
            log.warning("%s: a hidden or tool folder, not a class: left out", folder)
            continue
        if not _utf8(folder.name):  # an old zip's Latin-1 name: a label is text (a CLI audit's: a cryptic error)
            raise DataError(f"{os.fsencode(folder)!r}: a class folder's name that is not UTF-8; rename it")
        found = 0
        for p in sorted(folder.iterdir()):
            if not _utf8(p.name):
                unread.append(f"{os.fsencode(p.relative_to(root))!r} (a name that is not UTF-8)")
            elif p.is_dir():
                log.warning("%s: a folder inside a class folder, not read", p)
            elif p.name.startswith("."):  # hidden: a Mac's ._0.png beside 0.png is its metadata, not a picture
                if p.suffix.lower() in IMAGE_SUFFIXES:  # a .DS_Store is no news
                    hidden.append(str(p.relative_to(root)))
            elif p.suffix.lower() in IMAGE_SUFFIXES:
                try:
                    with Image.open(p) as im:
                        if im.format not in ACCEPTED_FORMATS:  # a GIF named .png: what the service answers 415
                            kind = f"{im.format} as {p.suffix.lower()}"
                            other[kind] = other.get(kind, 0) + 1
                            continue
                        images.append(prepare_image(im, pre))
                except (*NOT_AN_IMAGE, Image.DecompressionBombError) as e:
                    unread.append(f"{p.relative_to(root)} ({type(e).__name__})")
                    continue
                labels.append(len(classes))
                found += 1
            elif p.suffix.lower() in OTHER_PICTURES:
                other[p.suffix.lower()] = other.get(p.suffix.lower(), 0) + 1
        if found:
            classes.append(folder.name)
        else:
            log.warning("%s: no image it can read, left out (not a class)", folder)
    if hidden:
        more = " ..." if len(hidden) > 10 else ""
        log.warning("%d hidden picture files left out: %s%s", len(hidden), ", ".join(hidden[:10]), more)
    if unread:
        more = " ..." if len(unread) > 10 else ""
        log.warning("%d files left out, unreadable: %s%s", len(unread), ", ".join(unread[:10]), more)
    if other:
        counts = ", ".join(f"{n} {suffix}" for suffix, n in sorted(other.items()))
        log.warning("%d pictures left out (%s): convert them to PNG, JPEG or WebP", sum(other.values()), counts)
    _check_distinct(root, classes)
    if len(classes) < 2:
        raise DataError(
            f"{root}: a classifier needs two or more class sub-folders holding images (as in {root}/<class>/1.png); "
            f"found {classes}"
        )
    labels_ = np.asarray(labels, dtype=np.int64)
    return Dataset(np.stack(images), labels_, classes, "image-folder", str(root), {FOLDER_DIGEST: folder_digest(root)})


def load_sklearn_digits(size: int = 28) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, 0..16), upscaled to ``size`` and scaled to 0..255.

    The tiny dataset for ``--dry-run`` and tests: it ships inside scikit-learn, nothing is downloaded.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    small = (d.images * (255.0 / 16.0)).astype(np.uint8)
    # 8x8 -> a 20x20 digit in a size x size field, as MNIST frames its digits
    box = round(size * 20 / 28)
    off = (size - box) // 2
    out = np.zeros((len(small), 1, size, size), dtype=np.uint8)
    for i, im in enumerate(small):
        out[i, 0, off : off + box, off : off + box] = np.asarray(
            Image.fromarray(im).resize((box, box), Image.Resampling.BILINEAR)
        )
    return Dataset(out, d.target.astype(np.int64), list(DIGIT_LABELS), "sklearn-digits", "sklearn.datasets.load_digits")


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int, counted: str = "rows"
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified train/validation indices: the same labels and seed give the same split. A class
    of two or more rows whose share rounds to none holds one out, so that every class is measured; a split with
    no row on either side is a DataError (too few rows to train and measure on; ``counted``: what the message
    calls the rows)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = round(len(idx) * val_fraction)
        if n_val == 0 and len(idx) >= 2 and val_fraction > 0:
            n_val = 1
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    tr, va = np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
    if not len(va) or not len(tr):
        raise DataError(
            f"{len(labels)} {counted}: too few to hold out a validation split (val_fraction {val_fraction}) and "
            "train on the rest; each class needs two or more"
        )
    return tr, va


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images scaled to [0, 1]; DataError where a channel is one value in every
    image (blank pictures, or pictures the front door found nothing in): normalising by a std of 0 made every
    input NaN, and training then reported a diverged run."""
    x = images.astype(np.float64) / 255.0
    axes = (0, 2, 3)
    std = x.std(axis=axes)
    if (std == 0).any():
        raise DataError(
            f"channel {int(np.argmin(std))} of every training image is one value: the pictures are blank, or hold "
            "nothing the front door finds (contract/images.py: prepare_image); nothing to learn from"
        )
    return [float(v) for v in x.mean(axis=axes)], [float(v) for v in std]


FOLDER_DIGEST = "image-folder"  # dataset.sha256's key for an image folder: folder_digest of what was read


def _check_distinct(root: Path, classes: list[str]) -> None:
    """Two class folders that are one class: the same name in two Unicode forms (a Mac's zip writes "é" as "e" and
    a combining accent, beside an NFC "é"), or a link to a sibling (the same pictures under two labels), are refused;
    names that differ only in letter case are warned about (letters' "A" and "a" may well be two classes)."""
    seen: dict[str, str] = {}
    where: dict[Path, str] = {}
    cased: dict[str, str] = {}
    for name in classes:
        form = unicodedata.normalize("NFC", name)
        if form in seen:
            raise DataError(
                f"{root}: class folders {seen[form]!r} and {name!r} are one name in two Unicode forms; merge them"
            )
        seen[form] = name
        real = (root / name).resolve()
        if real in where:
            raise DataError(
                f"{root}: class folders {where[real]!r} and {name!r} are the same folder (a link); remove one"
            )
        where[real] = name
        folded = form.casefold()
        if folded in cased:
            log.warning("class folders %r and %r differ only in letter case: two classes", cased[folded], name)
        cased[folded] = name


def is_class_folder(folder: Path) -> bool:
    """A folder of an image folder that may be a class: not hidden, not a tool's own (.ipynb_checkpoints, the
    __MACOSX of a zip made on a Mac)."""
    return not folder.name.startswith(".") and folder.name != "__MACOSX"


def folder_digest(root: Path, hidden: bool = False) -> str:
    """sha256 over an image folder's class folders' image files (not hidden ones, which are not read; ``hidden``:
    them too, as digests recorded before 2026-12-07 were): each one's path (relative, '/') and bytes, in sorted
    order, so that a file added, removed, renamed or changed is another digest."""
    h = hashlib.sha256()
    files = (q for q in root.glob("*/*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
    for p in sorted(q for q in files if is_class_folder(q.parent) and (hidden or not q.name.startswith("."))):
        h.update(os.fsencode(p.relative_to(root).as_posix()) + b"\0" + sha256_file(p).encode())  # any name's bytes
    return h.hexdigest()


def check_recorded(path: Path, meta: ModelMetadata) -> None:
    """Raises DataError when ``path`` (a file, an IDX folder, or an image folder) is not what ``meta`` recorded:
    every file read must hash to a recorded sha256 (a file renamed or unpacked is another file), an image folder
    to its recorded digest. Nothing recorded (a model of synthetic data, or one exported from another tool): nothing
    to check, and a warning says so, as the rows called validation may be rows it was trained on (the CLI audit's)."""
    recorded = meta.dataset.sha256
    if not recorded:
        log.warning("%s records no hash of the data it was trained on: %s cannot be checked to be it", meta.name, path)
        return
    if FOLDER_DIGEST in recorded:
        digest = recorded[FOLDER_DIGEST]  # with hidden files only where the first differs: each reads the folder
        if not path.is_dir() or (digest != folder_digest(path) and digest != folder_digest(path, hidden=True)):
            raise DataError(f"{path} is not the image folder {meta.name} was trained on (its digest differs)")
        return
    files = sorted(path.glob("train-*-idx?-ubyte*")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: none of the files {meta.name} was trained on ({', '.join(sorted(recorded))})")
    for file in files:
        if sha256_file(file) not in recorded.values():
            raise DataError(f"{file} is not a file {meta.name} was trained on (its sha256 is none of those recorded)")


def recorded_split(
    meta: ModelMetadata, root: Path, check: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An IDX training folder -> (images (N, H, W), labels, train indices, validation indices) as model.json
    records the split; with ``check`` (not for another dataset, whose files have the same names) each file must
    be the one it was trained on (ValueError otherwise), or the validation rows would be other images."""
    img_path = next(root.glob("train-images-idx3-ubyte*"), None)
    lbl_path = next(root.glob("train-labels-idx1-ubyte*"), None)
    if img_path is None or lbl_path is None:
        raise DataError(f"{root}: not an IDX folder (train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz])")
    if check:
        check_recorded(root, meta)
    labels = read_idx(lbl_path).astype(np.int64)
    train, val = stratified_split(labels, meta.dataset.val_fraction, meta.dataset.split_seed)
    return read_idx(img_path), labels, train, val
