"""Bad artifacts: a missing, truncated or corrupt model.onnx, or metadata that does not match the graph, is
refused with a message naming the file; by default that stops start-up, and with NNSERVE_SKIP_BAD_ARTIFACTS
the model is reported not ready while the others serve."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.runtime import ArtifactError, load_family, load_model, load_vocab, read_metadata, warm_up
from service.settings import Settings
from tests.conftest import assert_envelope, png_bytes
from tests.server import Server

REPO = Path(__file__).resolve().parent.parent


def _copy(src, dst, name):
    shutil.copytree(src, dst)
    meta = json.loads((dst / "model.json").read_text())
    meta["name"] = name
    (dst / "model.json").write_text(json.dumps(meta))
    return meta


def _rehash(d, meta):
    meta["onnx_sha256"] = hashlib.sha256((d / "model.onnx").read_bytes()).hexdigest()
    (d / "model.json").write_text(json.dumps(meta))


def _break(kind, d, meta):
    onnx = d / "model.onnx"
    if kind == "missing":
        onnx.unlink()
    elif kind == "truncated":
        onnx.write_bytes(onnx.read_bytes()[:1000])
    elif kind == "corrupt":  # garbage whose hash model.json does record: onnxruntime must refuse it
        onnx.write_bytes(b"not an onnx graph" * 100)
        _rehash(d, meta)
    elif kind == "schema":  # a graph that does not match the tensor schema model.json promises
        meta["inputs"][0]["name"] = "pixels"
        (d / "model.json").write_text(json.dumps(meta))
    elif kind == "metadata":
        (d / "model.json").write_text("{not json")
    elif kind == "external":  # weights in a file beside the graph, which no sha256 in model.json covers
        import onnx as onnx_lib

        graph = onnx_lib.load(str(onnx))
        onnx_lib.save_model(graph, str(onnx), save_as_external_data=True, location="w.bin", size_threshold=0)
        assert (d / "w.bin").stat().st_size > 0
        _rehash(d, meta)
    elif kind == "labels":  # a label fewer than the graph's logits: every answer past it was a 500
        meta["labels"] = meta["labels"][:-1]
        (d / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "model.onnx: missing"),
        ("truncated", "model.onnx: sha256 does not match"),
        ("corrupt", "model.onnx: onnxruntime cannot load it"),
        ("schema", "model.onnx: graph inputs/outputs"),
        ("metadata", "model.json: unreadable metadata"),
        ("labels", "model.json: 9 labels for a graph of 10 logits"),
        ("external", "model.onnx: onnxruntime cannot load it"),
    ],
)
def test_bad_artifacts_are_refused_naming_the_file(tmp_path, artifact_root, kind, message):
    d = tmp_path / "bad-cnn"
    meta = _copy(artifact_root / "digits-cnn", d, "bad-cnn")
    _break(kind, d, meta)
    with pytest.raises(ArtifactError, match=message) as err:
        load_model(d, Settings(model_dir=tmp_path))
    assert str(d) in str(err.value)
    settings = Settings(model_dir=tmp_path, skip_bad_artifacts=True)
    failed: dict[str, str] = {}
    assert load_family("image-classification", settings, failed) == {} and message in failed["bad-cnn"]


def _break_vocab(kind, d):
    """A text model's vocabulary made bad, with model.json's sha256 of it kept true (a hash only says the bytes
    are the ones exported, not that they are a vocabulary the graph can read)."""
    meta = json.loads((d / "model.json").read_text())
    pre = meta["preprocessing"]
    path = d / pre["vocab_file"]
    tokens = json.loads(path.read_text())
    if kind == "not json":
        path.write_text("{not json")
    elif kind == "not a list of tokens":
        path.write_text(json.dumps({"<pad>": 0, "<unk>": 1}))
    elif kind == "longer than model.json says":
        path.write_text(json.dumps([*tokens, "zzzextra"]))
    elif kind == "longer than the graph's embedding":  # its id past the embedding's last row: a 500 per such word
        path.write_text(json.dumps([*tokens, *(f"zzzextra{i}" for i in range(5))]))
        pre["vocab_size"] = len(tokens) + 5
    pre["vocab_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (d / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("not json", "vocab.json: not a vocabulary"),
        ("not a list of tokens", "vocab.json: not a vocabulary"),
        ("longer than model.json says", r"vocab.json: \d+ tokens, where model.json says \d+"),
        ("longer than the graph's embedding", "model.onnx: the warm-up inference failed"),
    ],
)
def test_a_vocabulary_the_graph_cannot_read_is_refused(tmp_path, artifact_root, kind, message):
    """Each was served: the first two as a 500 on a repository load (a worker's start-up: restarted for ever),
    the last as a 500 for any text holding one of the words past the embedding."""
    d = tmp_path / "synthetic-lstm"
    shutil.copytree(artifact_root / "synthetic-lstm", d)
    _break_vocab(kind, d)
    with pytest.raises(ArtifactError, match=message):
        load_vocab(d, read_metadata(d))
        warm_up(load_model(d, Settings(model_dir=tmp_path)))


@pytest.fixture(scope="module")
def mixed_dir(artifact_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    shutil.copytree(artifact_root / "digits-cnn", root / "digits-cnn")
    shutil.copytree(artifact_root / "synthetic-lstm", root / "synthetic-lstm")
    meta = _copy(artifact_root / "digits-cnn", root / "broken-cnn", "broken-cnn")
    _break("truncated", root / "broken-cnn", meta)
    meta = _copy(artifact_root / "digits-cnn", root / "cnn-folder", "cnn-named")  # folder and model names differ
    _break("truncated", root / "cnn-folder", meta)
    meta = _copy(artifact_root / "digits-ae", root / "badmeta", "badmeta")
    _break("metadata", root / "badmeta", meta)
    meta = _copy(artifact_root / "digits-ae", root / "alien", "alien")  # a task no module of service/tasks/ serves
    meta["task"] = "image-regression"
    (root / "alien" / "model.json").write_text(json.dumps(meta))
    return root


@pytest.mark.server
@pytest.mark.slow
def test_start_up_stops_on_a_bad_artifact(mixed_dir, tmp_path):
    """bentoml serve exits before any worker starts (it imports the service first: service.runtime.preflight),
    and the log says which file is wrong."""
    srv = Server(mixed_dir, tmp_path / "serve.log")
    with pytest.raises(RuntimeError, match="exited with 1"):
        srv.start(timeout=60)
    log = srv.log_path.read_text()
    srv.stop()
    assert "badmeta/model.json: unreadable metadata" in log


CASES = {
    "no folder": "is not a folder",
    "empty": "holds no model",
    "metadata without its graph": "m/model.onnx",
    "a graph replaced": "digits-cnn/model.onnx: sha256 does not match",
    "a copy beside the model": "digits-cnn.old/model.json: names the model 'digits-cnn', whose own folder is beside",
    "a vocabulary outside the folder": "synthetic-lstm/model.json: '../vocab.json' lies outside the artifact's folder",
    "a vocabulary that is not one": "synthetic-lstm/vocab.json: not a vocabulary",
    "a name no request can use": "my cnn/model.json: unreadable metadata: name: String should match pattern",
    "a model.json over the limit": "digits-cnn/model.json: unreadable metadata: over NNSERVE_MAX_METADATA_BYTES (2,048",
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_model_folder_with_nothing_to_serve_stops_start_up_with_one_line(tmp_path, artifact_root, case):
    """A reviewer's missing folder had workers fail and restart 134 times in 11 minutes (14,607 log lines) while
    /readyz hung; now bentoml serve exits 1 with one line naming the folder or the file. A helper's audit found
    more that passed this check and then looped (a graph whose bytes changed: 96 tracebacks in 2.5 minutes), or
    served wrongly (a copy of a model beside it, named as it, answered in its place when its folder sorted later),
    or read a file outside the model folder (a vocabulary named "../vocab.json" or "/etc/passwd")."""
    import os
    import subprocess
    import sys

    root = tmp_path / "models"
    if case != "no folder":
        root.mkdir()
    if case == "metadata without its graph":
        (root / "m").mkdir()
        shutil.copy(artifact_root / "digits-cnn" / "model.json", root / "m" / "model.json")
    if case in ("a graph replaced", "a copy beside the model", "a model.json over the limit"):
        shutil.copytree(artifact_root / "digits-cnn", root / "digits-cnn")
    if case == "a graph replaced":
        with (root / "digits-cnn" / "model.onnx").open("ab") as f:
            f.write(b"\0")
    if case == "a name no request can use":  # served, listed, and refused by every /v1 route's pattern
        _copy(artifact_root / "digits-cnn", root / "my cnn", "my cnn")
    if case == "a copy beside the model":
        shutil.copytree(artifact_root / "digits-cnn", root / "digits-cnn.old")
    if case.startswith("a vocabulary"):
        shutil.copytree(artifact_root / "synthetic-lstm", root / "synthetic-lstm")
    if case == "a vocabulary that is not one":
        _break_vocab("not json", root / "synthetic-lstm")
    if case == "a vocabulary outside the folder":
        meta = json.loads((root / "synthetic-lstm" / "model.json").read_text())
        (root / "vocab.json").write_bytes((root / "synthetic-lstm" / meta["preprocessing"]["vocab_file"]).read_bytes())
        meta["preprocessing"]["vocab_file"] = "../vocab.json"
        (root / "synthetic-lstm" / "model.json").write_text(json.dumps(meta))
    env = {**os.environ, "NNSERVE_MODEL_DIR": str(root)}
    if case == "a model.json over the limit":  # (100 MB of model.json was read whole, at start-up and each load)
        env["NNSERVE_MAX_METADATA_BYTES"] = "2048"
        assert (root / "digits-cnn" / "model.json").stat().st_size > 2048
    cmd = [sys.executable, "-m", "bentoml", "serve", "service.service:NNServe", "--host", "127.0.0.1", "--port", "0"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1])
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, lines[-5:]
    assert lines[0].startswith("nnserve: ") and CASES[case] in lines[0], lines[0]


@pytest.mark.server
@pytest.mark.slow
def test_skipped_artifacts_are_not_ready_and_the_others_serve(mixed_dir, tmp_path, digits):
    srv = Server(mixed_dir, tmp_path / "serve.log", NNSERVE_SKIP_BAD_ARTIFACTS="true")
    srv.start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.get("/readyz").status_code == 200
            listing = c.get("/v1/models").json()
            cards = {m["name"]: m for m in listing["models"]}
            assert cards["digits-cnn"]["ready"] and cards["synthetic-lstm"]["ready"]
            assert not cards["broken-cnn"]["ready"] and "broken-cnn/model.onnx" in cards["broken-cnn"]["error"]
            assert "unreadable metadata" in listing["unavailable"]["badmeta"]
            assert "task 'image-regression' is not one this server serves" in listing["unavailable"]["alien"]
            assert str(mixed_dir) not in json.dumps(listing)  # the server's own paths stay its own
            card = c.get("/v1/models/broken-cnn")  # the card that says why, not the 503 a request gets
            assert card.status_code == 200 and card.json()["error"] == cards["broken-cnn"]["error"]
            image = base64.b64encode(png_bytes(digits.images[0, 0])).decode()
            r = c.post("/v1/classify", json={"model": "broken-cnn", "images": [image]})
            assert_envelope(r, 503, "not_ready")
            assert not cards["cnn-named"]["ready"] and "cnn-folder/model.onnx" in cards["cnn-named"]["error"]
            r = c.post("/v1/classify", json={"model": "cnn-named", "images": [image]})
            assert_envelope(r, 503, "not_ready")
            assert r.headers["retry-after"]
            assert c.post("/v1/classify", json={"model": "digits-cnn", "images": [image]}).status_code == 200
            r = c.post("/v1/sentiment", json={"model": "synthetic-lstm", "texts": ["a great film"]})
            assert r.status_code == 200
    finally:
        srv.stop()


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize(("control", "ready"), [("none", 503), ("explicit", 200)])
def test_a_replica_that_serves_no_model_is_not_ready(mixed_dir, tmp_path, control, ready):
    """Every artifact left out by NNSERVE_SKIP_BAD_ARTIFACTS: /readyz was 200, so a load balancer sent the replica
    traffic it could only answer 404; now 503, unless model control may load a model later (ready, as Triton)."""
    root = tmp_path / "models"
    shutil.copytree(mixed_dir / "broken-cnn", root / "broken-cnn")
    srv = Server(root, tmp_path / "serve.log", NNSERVE_SKIP_BAD_ARTIFACTS="true", NNSERVE_MODEL_CONTROL=control)
    srv.start(probe="/livez")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.get("/readyz").status_code == ready
            assert c.get("/v2/health/ready").status_code == 503  # the protocol's: a served model is not ready
            cards = c.get("/v1/models").json()["models"]
            assert [m["name"] for m in cards] == ["broken-cnn"] and not cards[0]["ready"]
    finally:
        srv.stop()


def test_a_large_batch_leaves_no_arena_behind():
    """onnxruntime's CPU arena kept what a run allocated for the session's lifetime: a batch of 128 long texts (8
    windows of 64 tokens each) left 422 MB held by sst2-gru (a worker after a sentiment audit: 1.9 GB); 17 MB since
    the runs shrink it (service/runtime.py: RUN_OPTIONS). A fresh process's resident size, before and after."""
    code = (
        "import numpy as np\n"
        "from pathlib import Path\n"
        "from service.runtime import load_model\n"
        "from service.settings import Settings\n"
        "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096 >> 20\n"
        "model = load_model(Path('artifacts/sst2-gru'), Settings())\n"
        "model.run_all(np.full((1, 8), 5, np.int64), np.array([8]))\n"
        "base = rss()\n"
        "for _ in range(3):\n"
        "    model.run_all(np.full((1024, 64), 5, np.int64), np.full(1024, 64))\n"
        "print(rss() - base)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert int(out.stdout) < 80, f"{out.stdout.strip()} MB kept after three batches of 1,024 windows"
