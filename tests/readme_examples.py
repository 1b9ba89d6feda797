"""Run the README's usage examples against a real server and compare what they print with what the README shows.

Every fenced ``bash`` or ``python`` block under the README's ``## API`` heading is an example. The fenced block
right after it whose info string's second word is ``output`` (```` ```json output ````, ```` ```text output ````)
is what the example prints. Examples run as written, each on its own (a fresh ``bash -euo pipefail`` or
Python process), in a scratch folder that holds a link to ``examples/``, with ``localhost:3000`` pointed at
the server under test.

How output is compared (the tolerance the README states):

- When the README's output parses as JSON values, the printed output must parse to the same number of values
  and each must match: objects with the same keys (a key ``"…"`` allows more), arrays of the same length (a
  last element ``"…"`` allows any continuation of the shown prefix), strings equal (one ending in ``…`` is a
  prefix), integers equal, and a float ``e`` matches ``a`` when ``|a - e| <= max(1e-4, 1e-3 * |e|)``.
- Otherwise the output is compared as text: the same words and punctuation (whitespace runs collapsed) and
  the same numbers within the same float tolerance.

``python -m tests.readme_examples --update`` reruns every example (against a fresh server over
``artifacts/``, or ``--url``) and rewrites the output blocks, abbreviating long base64 strings and arrays and
rounding floats to 5 significant digits; ``make readme`` runs it after a model changes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
SECTION = "## API"
DOCUMENTED_HOST = "localhost:3000"
DOCUMENTED_GRPC = "localhost:8001"
# the server the examples run against: the shipped artifacts, with the repository API open so the model lifecycle
# example (unload, index, load) runs as written
SERVER_ENV = {"NNSERVE_MODEL_CONTROL": "explicit", "NNSERVE_REPOSITORY_OPEN": "true"}
ELLIPSIS = "…"
FENCE = re.compile(r"^```(\S*)(?:[ \t]+(\S+))?[ \t]*$")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
RUNNABLE = ("bash", "python")


@dataclass
class Example:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence in the README
    expected: str | None  # the output block's text
    output_span: tuple[int, int] | None  # 0-based line indices of the output block's content [start, end)

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"


def _blocks(lines: list[str], start: int, end: int) -> list[tuple[str, str, int, int]]:
    """(language, marker, content start, content end) of the fenced blocks in lines[start:end]."""
    out = []
    i = start
    while i < end:
        m = FENCE.match(lines[i])
        if m and m.group(1):
            j = i + 1
            while j < end and lines[j].rstrip() != "```":
                j += 1
            out.append((m.group(1), m.group(2) or "", i + 1, j))
            i = j + 1
        else:
            i += 1
    return out


def section_bounds(lines: list[str]) -> tuple[int, int]:
    start = next(i for i, line in enumerate(lines) if line.rstrip() == SECTION)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return start, end


def collect(text: str) -> list[Example]:
    lines = text.split("\n")
    blocks = _blocks(lines, *section_bounds(lines))
    examples = []
    for k, (lang, marker, a, b) in enumerate(blocks):
        if lang not in RUNNABLE or marker == "output":
            continue
        expected, span = None, None
        if k + 1 < len(blocks) and blocks[k + 1][1] == "output":
            _, _, oa, ob = blocks[k + 1]
            if all(not line.strip() for line in lines[b + 1 : oa - 1]):  # only blank lines in between
                expected, span = "\n".join(lines[oa:ob]), (oa, ob)
        examples.append(Example(lang, "\n".join(lines[a:b]), a, expected, span))
    return examples


def run(example: Example, host: str, grpc_host: str = DOCUMENTED_GRPC, timeout: float = 120) -> str:
    """Run one example against ``host`` (``127.0.0.1:PORT``, and its gRPC listener ``grpc_host``); its stdout, or
    AssertionError with what failed."""
    code = example.code.replace(DOCUMENTED_HOST, host).replace(DOCUMENTED_GRPC, grpc_host)
    with tempfile.TemporaryDirectory() as scratch:
        os.symlink(REPO / "examples", Path(scratch) / "examples")
        argv = ["bash", "-euo", "pipefail", "-c", code] if example.lang == "bash" else [sys.executable, "-c", code]
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        proc = subprocess.run(argv, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{example.id} exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout


# ---- comparison ------------------------------------------------------------------------------------------


def json_values(text: str) -> list[Any] | None:
    """Every JSON value in ``text`` (whitespace-separated), or None if it is not such a sequence."""
    decoder, values, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return values
        try:
            value, i = decoder.raw_decode(text, i)
        except ValueError:
            return None
        values.append(value)


def close(expected: float, actual: float) -> bool:
    return math.isfinite(actual) and abs(actual - expected) <= max(1e-4, 1e-3 * abs(expected))


def match(e: Any, a: Any, path: str = "$") -> list[str]:
    """Where ``a`` (printed) differs from ``e`` (the README's), under the tolerance in the module docstring."""
    if isinstance(e, dict):
        if not isinstance(a, dict):
            return [f"{path}: expected an object, got {a!r:.80}"]
        keys = set(e) - {ELLIPSIS}
        problems = [f"{path}: missing {k!r}" for k in keys - set(a)]
        if ELLIPSIS not in e:
            problems += [f"{path}: unexpected {k!r}" for k in set(a) - keys]
        for k in keys & set(a):
            problems += match(e[k], a[k], f"{path}.{k}")
        return problems
    if isinstance(e, list):
        if not isinstance(a, list):
            return [f"{path}: expected an array, got {a!r:.80}"]
        open_ended = bool(e) and e[-1] == ELLIPSIS
        shown = e[:-1] if open_ended else e
        if (len(a) < len(shown)) if open_ended else (len(a) != len(shown)):
            return [f"{path}: {len(a)} items, README shows {len(shown)}{' or more' if open_ended else ''}"]
        return [p for i, item in enumerate(shown) for p in match(item, a[i], f"{path}[{i}]")]
    if isinstance(e, str) and e.endswith(ELLIPSIS):
        ok = isinstance(a, str) and a.startswith(e[:-1])
        return [] if ok else [f"{path}: {a!r:.80} does not start with {e[:-1]!r}"]
    if isinstance(e, float) and isinstance(a, int | float) and not isinstance(a, bool):
        return [] if close(e, float(a)) else [f"{path}: {a} is not {e} within tolerance"]
    if type(e) is not type(a) or e != a:
        return [f"{path}: {a!r:.80} != README's {e!r:.80}"]
    return []


def _text_parts(text: str) -> tuple[list[str], list[str]]:
    words = [" ".join(part.split()) for part in NUMBER.split(text)]
    return words, NUMBER.findall(text)


def compare(expected: str, actual: str) -> list[str]:
    """Mismatches between an example's printed output and its README output block (empty: they agree)."""
    want = json_values(expected)
    if want is not None and want:
        got = json_values(actual)
        if got is None:
            return [f"printed output is not JSON: {actual[:200]!r}"]
        if len(got) != len(want):
            return [f"{len(got)} JSON values printed, README shows {len(want)}"]
        return [p for i, (e, a) in enumerate(zip(want, got, strict=True)) for p in match(e, a, f"${i}")]
    (words_e, nums_e), (words_a, nums_a) = _text_parts(expected), _text_parts(actual)
    if words_e != words_a or len(nums_e) != len(nums_a):
        return [f"printed {actual.strip()[:300]!r}, README shows {expected.strip()[:300]!r}"]
    problems = []
    for e, a in zip(nums_e, nums_a, strict=True):
        if ("." in e or "e" in e.lower()) and not close(float(e), float(a)):
            problems.append(f"{a} is not {e} within tolerance")
        elif "." not in e and "e" not in e.lower() and e != a:
            problems.append(f"{a} != README's {e}")
    return problems


# ---- regeneration ----------------------------------------------------------------------------------------


def abbreviate(value: Any) -> Any:
    """What the README shows of a printed JSON value: long base64-like strings and arrays cut, floats rounded."""
    if isinstance(value, dict):
        return {k: abbreviate(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [abbreviate(v) for v in value]
        return [*items[:3], ELLIPSIS] if len(items) > 6 else items
    if isinstance(value, str) and len(value) > 40 and " " not in value:
        return value[:16] + ELLIPSIS
    if isinstance(value, float):
        return float(f"{value:.5g}")
    return value


def dumps(value: Any, indent: int = 0, width: int = 110) -> str:
    """JSON on one line when it fits in ``width``, else one member per line (recursively)."""
    flat = json.dumps(value, ensure_ascii=False)
    if len(flat) + indent <= width or not isinstance(value, dict | list) or not value:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        inner = [f"{pad}{json.dumps(k)}: {dumps(v, indent + 2, width).lstrip()}" for k, v in value.items()]
        return "{\n" + ",\n".join(inner) + "\n" + " " * indent + "}"
    inner = [pad + dumps(v, indent + 2, width) for v in value]
    return "[\n" + ",\n".join(inner) + "\n" + " " * indent + "]"


def rendered(actual: str) -> str:
    values = json_values(actual)
    if values:
        return "\n".join(dumps(abbreviate(v)) for v in values)
    return actual.rstrip("\n")


def update(host: str, grpc_host: str = DOCUMENTED_GRPC, readme: Path = README) -> int:
    """Rerun every example with an output block and rewrite those blocks; returns how many changed."""
    lines = readme.read_text().split("\n")
    changed = 0
    for ex in reversed(collect("\n".join(lines))):  # from the bottom, so earlier spans stay valid
        if ex.output_span is None:
            continue
        new = rendered(run(ex, host, grpc_host)).split("\n")
        a, b = ex.output_span
        if lines[a:b] != new:
            lines[a:b] = new
            changed += 1
    readme.write_text("\n".join(lines))
    return changed


def main() -> int:
    p = argparse.ArgumentParser(description="Run the README's usage examples; --update rewrites their outputs")
    p.add_argument("--url", help="a running server (default: start one over artifacts/)")
    p.add_argument("--update", action="store_true", help="rewrite the README's output blocks")
    args = p.parse_args()
    server = None
    if args.url is None:
        from tests.server import Server

        log = Path(tempfile.mkdtemp()) / "serve.log"
        server = Server(REPO / "artifacts", log, **SERVER_ENV).start()
        args.url = server.url
    host = args.url.split("://", 1)[-1].rstrip("/")
    grpc_host = server.grpc_url if server is not None else DOCUMENTED_GRPC
    try:
        if args.update:
            print(f"{update(host, grpc_host)} output blocks rewritten")
            return 0
        failed = 0
        for ex in collect(README.read_text()):
            out = run(ex, host, grpc_host)
            problems = compare(ex.expected, out) if ex.expected is not None else []
            failed += bool(problems)
            print(f"{ex.id}: {'ok' if not problems else 'DIFFERS'}", *problems, sep="\n  ")
        return 1 if failed else 0
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
