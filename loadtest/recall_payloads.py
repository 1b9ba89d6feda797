"""Payloads of the load test's recall users (associative memories, the ``recall`` task), built from the model's
card: the digit samples of its dataset at its input size, sent as PNG images or as ±1 states (a unit per pixel,
binarised at mid-grey) with 10-30 % of their units flipped; and the check of an answer. Imported by locustfile.py
as a sibling module (Locust puts the locustfile's folder on sys.path); Pillow and the standard library only."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from typing import Any

from payloads import ImageModel
from PIL import Image


@dataclass
class RecallModel:
    name: str
    labels: list[str]  # the stored patterns' classes
    units: int  # N: the length of a state
    images: ImageModel  # the samples as PNGs, at the model's input size and on paper
    states: list[list[int]]  # the same samples as ±1 states of N units

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> RecallModel:
        images = ImageModel.from_card(card)
        units = int(card["inputs"][0]["shape"][1])
        states = []
        for png in images.native:
            with Image.open(io.BytesIO(png)) as im:
                pixels = list(im.convert("L").getdata())
            if len(pixels) == units:
                states.append([1 if v > 127 else -1 for v in pixels])
        if not states:  # a memory whose units are not the pixels of its input images: random states
            states = [[random.choice((-1, 1)) for _ in range(units)] for _ in range(16)]
        return cls(card["name"], list(card["labels"]), units, images, states)

    def payload(self, n: int) -> dict[str, Any]:
        """n cues: half the requests send images, the others states with 10-30 % of their units flipped."""
        if random.random() < 0.5:
            return {"model": self.name, "images": self.images.b64(n)}
        cues = []
        for state in random.choices(self.states, k=n):
            share = random.uniform(0.1, 0.3)
            cues.append([-v if random.random() < share else v for v in state])
        return {"model": self.name, "states": cues}

    def validate(self, body: dict[str, Any], n: int) -> None:
        """An answer to ``payload(n)``; a ValueError says what is wrong (locustfile.check: a malformed 200)."""
        results = body["results"]
        if body["model"] != self.name or len(results) != n:
            raise ValueError(f"expected {n} recalls from {self.name}, got {len(results)} from {body['model']!r}")
        for r in results:
            if len(r["state"]) != self.units or not set(r["state"]) <= {-1, 1}:
                raise ValueError(f"a final state is not {self.units} units of -1 and 1")
            if not 1 <= r["sweeps"] == len(r["energies"]):
                raise ValueError(f"{r['sweeps']} sweeps with {len(r['energies'])} energies")
            if r["spurious"] != (r["matched"] is None) or (r["label"] is not None and r["label"] not in self.labels):
                raise ValueError(f"matched {r['matched']!r} with label {r['label']!r} is not a stored pattern")
