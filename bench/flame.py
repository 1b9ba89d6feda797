"""A flame graph (SVG) from py-spy's raw output (``py-spy record -f raw``: one collapsed stack and its sample count
per line), with no tool beyond the standard library: frames narrower than --min-percent are left out, each frame
is labelled ``function (file)`` and titled with its share of the samples.

    python -m bench.flame PROFILE.txt OUT.svg --title "POST /v1/classify, c=32, 2 workers"
"""

from __future__ import annotations

import argparse
import html
import re
import zlib
from pathlib import Path
from typing import Any

WIDTH, ROW = 1200, 16


def _frame(text: str) -> str:
    """'fn (path/to/module.py:123)' -> 'fn (module.py)'."""
    m = re.fullmatch(r"(.*) \((?:.*/)?([^/]+?)(?::\d+)?\)", text)
    return f"{m.group(1)} ({m.group(2)})" if m else text


def tree(lines: list[str]) -> dict[str, Any]:
    root: dict[str, Any] = {"n": 0, "kids": {}}
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        root["n"] += n
        node = root
        for frame in stack.split(";"):
            node = node["kids"].setdefault(_frame(frame), {"n": 0, "kids": {}})
            node["n"] += n
    return root


def svg(root: dict[str, Any], title: str, min_percent: float) -> str:
    total = max(root["n"], 1)
    rects: list[str] = []
    depth = 0

    def walk(node: dict[str, Any], x: float, level: int) -> None:
        nonlocal depth
        for name, kid in sorted(node["kids"].items()):
            w = WIDTH * kid["n"] / total
            if 100 * kid["n"] / total >= min_percent:
                depth = max(depth, level + 1)
                y = 24 + level * ROW
                hue = 20 + zlib.crc32(name.split(" (")[-1].encode()) % 40
                label = html.escape(name if w > 7 * len(name) else name[: max(int(w / 7) - 2, 0)] + "..")
                tip = html.escape(f"{name}: {100 * kid['n'] / total:.1f} % of samples")
                rects.append(
                    f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{ROW - 1}" '
                    f'fill="hsl({hue},85%,62%)"/>'
                    + (f'<text x="{x + 2:.1f}" y="{y + 11}">{label}</text>' if w > 20 else "")
                    + "</g>"
                )
                walk(kid, x, level + 1)
            x += w

    walk(root, 0.0, 0)
    height = 24 + (depth + 1) * ROW
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="monospace" '
        f'font-size="10"><text x="4" y="15" font-size="12">{html.escape(title)} ({total} samples; top down)</text>'
    )
    return head + "".join(rects) + "</svg>\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("profile", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--title", default="")
    ap.add_argument("--min-percent", type=float, default=0.3)
    args = ap.parse_args(argv)
    root = tree(args.profile.read_text().splitlines())
    args.out.write_text(svg(root, args.title or args.profile.name, args.min_percent))
    print(f"wrote {args.out} ({root['n']} samples)")


if __name__ == "__main__":
    main()
