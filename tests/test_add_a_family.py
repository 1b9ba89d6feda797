"""docs/ARCHITECTURE.md's "add a family", walked on its toy family (docs/toy-family/): its modules are copied
into a copy of the source tree, one per layer, and nothing else there is edited; the family then trains,
exports with parity, and is served beside a shipped family on its own /v1 route, on /v2, in the model cards,
the OpenAPI document and the metrics."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import png_bytes
from tests.server import REPO, Server
from tests.test_layers import ALLOWED, project_imports

TOY = REPO / "docs" / "toy-family"
SOURCE = ("contract", "models", "training", "export", "service")


def toy_files() -> list[str]:
    return sorted(p.relative_to(TOY).as_posix() for p in TOY.rglob("*.py"))


def test_the_toy_family_is_one_module_per_layer_and_the_doc_lists_each():
    files = toy_files()
    assert [f.split("/")[0] for f in files] == ["export", "models", "service", "training"]
    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    for f in files:
        assert f"docs/toy-family/{f}" in doc, f"docs/ARCHITECTURE.md does not name {f}"
    assert "Files touched to add the toy family: 4" in doc


@pytest.mark.parametrize("name", toy_files())
def test_the_toy_modules_keep_the_layer_rules(name):
    layer = name.split("/")[0]
    imported = {m.split(".")[0] for m in project_imports(TOY / name)}
    assert imported <= ALLOWED[layer] | {layer}, f"{name} imports {sorted(imported)}"


def _png(level: int) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.full((28, 28), level, np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.server
@pytest.mark.slow
def test_a_new_family_trains_exports_and_serves_from_its_modules_alone(tmp_path, artifact_root, digits):
    tree = tmp_path / "tree"
    for layer in SOURCE:
        shutil.copytree(REPO / layer, tree / layer, ignore=shutil.ignore_patterns("__pycache__"))
    for name in toy_files():
        assert not (tree / name).exists(), f"{name} would replace a file"
        shutil.copy(TOY / name, tree / name)

    def run(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", *args], cwd=tree, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]

    run("training", "toy-brightness", "--out", "runs/toy", "--no-progress")
    run("export", "runs/toy/checkpoint.pt", "--out", "artifacts/toy-brightness")
    meta = json.loads((tree / "artifacts" / "toy-brightness" / "model.json").read_text())
    assert meta["task"] == "image-regression" and meta["architecture"] == "toy-brightness"
    assert meta["parity"]["max_abs_diff"] <= 1e-4 and meta["outputs"] == [
        {"name": "value", "dtype": "float32", "shape": [-1]}
    ]
    shutil.copytree(artifact_root / "digits-cnn", tree / "artifacts" / "digits-cnn")

    srv = Server(tree / "artifacts", tmp_path / "serve.log", root=tree, NNSERVE_API_WORKERS="1").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            r = c.post("/v1/regress", json={"model": "toy-brightness", "images": [_png(240), _png(15)]})
            assert r.status_code == 200, r.text
            bright, dark = r.json()["values"]
            assert bright > dark + 0.5, (bright, dark)  # it learned brightness: 0.94 vs 0.06 on [0, 1]
            assert c.post("/v1/regress", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
            x = np.full((1, 1, 28, 28), 0.9, np.float32)
            body = {
                "inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": x.ravel().tolist()}]
            }
            r = c.post("/v2/models/toy-brightness/infer", json=body)
            assert r.status_code == 200, r.text
            assert [o["name"] for o in r.json()["outputs"]] == ["value"]
            cards = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
            assert cards["toy-brightness"]["task"] == "image-regression" and cards["toy-brightness"]["ready"]
            assert "/v1/regress" in c.get("/docs.json").json()["paths"]
            image = base64.b64encode(png_bytes(digits.images[0, 0])).decode()
            r = c.post("/v1/classify", json={"model": "digits-cnn", "images": [image]})
            assert r.status_code == 200, r.text
            assert 'endpoint="/v1/regress"' in c.get("/metrics").text
    finally:
        srv.stop()
