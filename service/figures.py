"""An artifact's figures: the PNG files its folder holds beside model.onnx (``curves.png``, the training curves, for
every model; a sample grid, an RBF network's centres, a Hopfield network's patterns and energy traces...), read
once when the version is loaded and served by ``GET /v1/models/{name}/figures/{figure}``.

A client's text never becomes a path: the route looks its figure up among the names read at load, which are only
files directly in the folder, named by ``FIGURE_NAME``, regular files opened without following a symlink,
starting with PNG's signature and at most ``NNSERVE_MAX_FIGURE_BYTES`` each (``NNSERVE_MAX_FIGURES`` per version).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from service.errors import ApiError

log = logging.getLogger("bentoml.nnserve")

FIGURE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,59}\.png$"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Figure:
    """One figure as read at load: its bytes and their strong ETag (the sha256 of the bytes, quoted)."""

    name: str
    body: bytes
    etag: str


def read_figures(folder: Path, max_bytes: int, max_count: int) -> dict[str, Figure]:
    """name -> Figure for the first ``max_count`` PNG files by name directly in ``folder`` that may be served;
    anything else is left out (an oversized, unreadable or symlinked file is logged). Never raises: a model is
    served without its figures rather than not at all."""
    try:
        names = sorted(e.name for e in os.scandir(folder) if re.fullmatch(FIGURE_NAME, e.name))
    except OSError as e:
        log.warning("no figures for %s: %s", folder, e)
        return {}
    if len(names) > max_count:
        log.warning("%s: %d figures, serving the first %d by name", folder, len(names), max_count)
    out: dict[str, Figure] = {}
    for name in names[:max_count]:
        why, body = _read(folder / name, max_bytes)
        if body is None:
            log.warning("not serving the figure %s: %s", folder / name, why)
            continue
        out[name] = Figure(name, body, '"' + hashlib.sha256(body).hexdigest() + '"')
    return out


def _read(path: Path, max_bytes: int) -> tuple[str, bytes | None]:
    """(why not, None) or ("", the file's bytes): a regular file (a symlink is not followed, not even to a file
    inside the folder), read with a bound whatever its size claims, that starts like a PNG."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:  # ELOOP for a symlink
        return f"cannot open it ({e.strerror}; a symlink is never followed)", None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a folder, a FIFO, a device
            return "not a regular file", None
        with os.fdopen(os.dup(fd), "rb") as f:
            body = f.read(max_bytes + 1)
    except OSError as e:
        return f"unreadable ({e.strerror})", None
    finally:
        os.close(fd)
    if len(body) > max_bytes:
        return f"over {max_bytes:,} bytes (NNSERVE_MAX_FIGURE_BYTES)", None
    if not body.startswith(PNG_SIGNATURE):
        return "not a PNG", None
    return "", body


def pick(figures: dict[str, Figure], name: str, model: str, version: str) -> Figure:
    """The figure a request names, or the 404 envelope naming the ones this version has."""
    figure = figures.get(name)
    if figure is None:
        raise ApiError(
            "not_found",
            f"model {model!r} (version {version}) has no figure {name!r}",
            [{"figures": sorted(figures)}],
        )
    return figure


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether a conditional GET's If-None-Match names ``etag`` (weak comparison, RFC 9110 13.1.2) or is ``*``."""
    if if_none_match is None:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or etag in (t.removeprefix("W/") for t in tags)
