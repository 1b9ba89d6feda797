"""The registries agree (docs/ARCHITECTURE.md, Registries): every model family has a training recipe and an export
spec, its task is served and load-tested, the shipped artifacts cover every family; and the tests that run over
the registries pick a new architecture or task up without being edited: every registered architecture trains
and exports with parity, and every served model answers a /v2 round trip built from its own metadata."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

import models
from export.spec import TASKS as SERVED_AS
from export.spec import load_specs
from service.registry import load_tasks
from tests.server import REPO
from training.registry import load_recipes

FAMILIES = sorted({models.get_entry(name).family for name in models.list_models()})
RECIPES = load_recipes()
SPECS = load_specs()
TASKS = load_tasks()


def locust_tasks() -> set[str]:
    """The tasks the Locust user classes drive (their ``task_family``), read from the locustfile's source."""
    tree = ast.parse((REPO / "loadtest" / "locustfile.py").read_text())
    return {
        node.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "task_family" for t in node.targets)
        and isinstance(node.value, ast.Constant)
        and node.value.value
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_a_module_in_every_layer(family):
    assert family in RECIPES, f"no training recipe for {family} (training/<family>.py, register_recipe)"
    assert family in SPECS, f"no export spec for {family} (export/specs/, register_spec)"
    task = SERVED_AS[family]
    assert task in TASKS, f"{family} artifacts are served as {task!r}, which no module of service/tasks/ registers"
    assert task in locust_tasks(), f"no Locust user class drives {task!r} (loadtest/locustfile.py, task_family)"


def test_the_shipped_artifacts_cover_every_family_and_task():
    shipped = [json.loads(p.read_text()) for p in sorted((REPO / "artifacts").glob("*/model.json"))]
    assert {models.get_entry(m["architecture"]).family for m in shipped} == set(FAMILIES)
    assert {m["task"] for m in shipped} == set(TASKS)


def test_every_task_has_a_route_a_family_and_a_v2_face():
    for task in TASKS.values():
        assert task.router.routes, f"{task.name} has no /v1 route"
        assert task.methods and all(hasattr(task.family.inner, m) for m in task.methods)
        assert task.v2.run is not None


ARCHITECTURES = models.list_models()
ONE_THREAD = os.environ | {"OMP_NUM_THREADS": "1"}  # two runs at once on two cores


def _dry_run(name: str, out: Path) -> str | None:
    """`python -m training NAME --dry-run`, then `python -m export` of its checkpoint; None, or what failed."""
    for args in (
        ("training", name, "--dry-run", "--no-progress", "--out", str(out / "run")),
        ("export", str(out / "run" / "checkpoint.pt"), "--out", str(out / "artifact"), "--name", "m"),
    ):
        done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=ONE_THREAD, capture_output=True, text=True)
        if done.returncode != 0:
            return f"python -m {' '.join(args)}: exit {done.returncode}\n{done.stderr[-3000:]}"
    return None


class DryRuns:
    """Each architecture's dry run in a subprocess, two at a time: an export is one busy core for several seconds,
    so the test that waits for one architecture's run has started the next one's."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.runs: dict[str, Future[str | None]] = {}

    def _start(self, name: str) -> None:
        if name not in self.runs:
            self.runs[name] = self.pool.submit(_dry_run, name, self.root / name)

    def result(self, name: str) -> tuple[str | None, Path]:
        self._start(name)
        later = ARCHITECTURES[ARCHITECTURES.index(name) + 1 :]
        if later:
            self._start(later[0])
        return self.runs[name].result(), self.root / name / "artifact"


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    runs = DryRuns(tmp_path_factory.mktemp("dry-runs"))
    yield runs
    runs.pool.shutdown(cancel_futures=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_architecture_trains_and_exports_with_parity(name, dry_runs):
    """A dry run of `python -m training` and `python -m export` for each registered architecture: the parity
    check (torch against onnxruntime at batch 1 and 8) passes, and model.json names the served task."""
    failed, artifact = dry_runs.result(name)
    assert failed is None, failed
    meta = json.loads((artifact / "model.json").read_text())
    assert meta["task"] == SERVED_AS[models.get_entry(name).family]
    assert meta["parity"]["max_abs_diff"] <= 1e-3


def _zeros(tensor: dict) -> dict:
    shape = [2 if d == -1 else d for d in tensor["shape"]]
    if tensor["datatype"] == "BYTES":
        data: list = ["a fine and thoughtful film"] * int(np.prod(shape))
    else:
        data = [0] * int(np.prod(shape))
    return {"name": tensor["name"], "shape": shape, "datatype": tensor["datatype"], "data": data}


@pytest.mark.server
def test_every_served_model_answers_a_v2_round_trip_built_from_its_metadata(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        cards = c.get("/v1/models").json()["models"]
        assert {card["task"] for card in cards} == set(TASKS), "the test artifacts should cover every task"
        for card in cards:
            meta = c.get(f"/v2/models/{card['name']}").json()
            r = c.post(f"/v2/models/{card['name']}/infer", json={"inputs": [_zeros(t) for t in meta["inputs"]]})
            assert r.status_code == 200, (card["name"], r.text)
            outputs = {o["name"]: o for o in r.json()["outputs"]}
            for declared in meta["outputs"]:
                if declared["name"] in outputs:
                    assert outputs[declared["name"]]["shape"][0] == 2, (card["name"], declared["name"])
            on_request = set(TASKS[card["task"]].v2.on_request)
            assert set(outputs) == {t["name"] for t in meta["outputs"]} - on_request, card["name"]
