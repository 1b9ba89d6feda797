"""Model versions and model control (service/repository.py) on real servers: versions side by side under a
version policy, the default and the versions a request picks, every repository call over HTTP and gRPC with
tritonclient, a bad new version refused while the old one serves, a hot swap under load from every kind of client
with zero failures (the short version of bench/swap.py), poll mode, and the gate in front of it all."""

from __future__ import annotations

import base64
import json
import shutil
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from bench.swap import clients, drive, new_version, swapper
from service.errors import ApiError
from service.repository import Repository
from service.settings import Settings
from tests.conftest import png_bytes
from tests.server import Server

KEY = "repository-test-key"
AUTH = {"authorization": f"Bearer {KEY}"}


def auth() -> dict[str, str]:
    """The key, in a dict of its own per call: tritonclient.http adds its own headers to the one it is given."""
    return dict(AUTH)


CNN, LSTM = "digits-cnn", "synthetic-lstm"


def versioned_dir(root, artifact_root, versions=(1, 2)):
    """digits-cnn as numbered versions (copies of one export), synthetic-lstm in today's layout."""
    for v in versions:
        new_version(root, v, artifact_root / CNN)
    shutil.copytree(artifact_root / LSTM, root / LSTM)
    return root


@pytest.fixture(scope="module")
def explicit(artifact_root, tmp_path_factory):
    root = versioned_dir(tmp_path_factory.mktemp("versions"), artifact_root)
    srv = Server(
        root,
        tmp_path_factory.mktemp("repo") / "serve.log",
        NNSERVE_API_KEY=KEY,
        NNSERVE_MODEL_CONTROL="explicit",
        NNSERVE_VERSION_POLICY=json.dumps({CNN: {"latest": 2}}),
        NNSERVE_MODELS=json.dumps([CNN, LSTM]),
    )
    srv.root_dir = root
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http(explicit):
    with httpx.Client(base_url=explicit.url, timeout=60, headers=AUTH) as c:
        yield c


def classify(http, digits, version=None):
    body = {"model": CNN, "images": [base64.b64encode(png_bytes(np.asarray(digits.images[0][0]))).decode()]}
    if version is not None:
        body["version"] = version
    return http.post("/v1/classify", json=body)


@pytest.mark.server
@pytest.mark.slow
def test_versions_side_by_side_with_the_newest_as_default(explicit, http, digits):
    card = http.get(f"/v1/models/{CNN}").json()
    assert card["versions"] == ["1", "2"] and card["version"] == "2"
    assert http.get(f"/v1/models/{LSTM}").json()["versions"] == ["1"]  # today's layout: version 1
    assert http.get(f"/v1/models/{CNN}?version=1").json()["version"] == "1"  # another served version's card
    r = http.get(f"/v1/models/{CNN}?version=3")  # never the default's card in its place
    assert r.status_code == 404 and r.json()["error"]["details"] == [{"versions": ["1", "2"]}]
    answers = {v: classify(http, digits, v) for v in (None, "1", "2")}
    assert {v: r.json()["version"] for v, r in answers.items()} == {None: "2", "1": "1", "2": "2"}
    assert answers["1"].json()["predictions"] == answers["2"].json()["predictions"]  # copies of one export
    r = classify(http, digits, "3")
    assert r.status_code == 404 and r.json()["error"]["details"] == [{"versions": ["1", "2"]}]
    tc = th.InferenceServerClient(explicit.url.removeprefix("http://"))
    assert tc.get_model_metadata(CNN, headers=auth())["versions"] == ["1", "2"]
    x = np.zeros((1, 1, 28, 28), np.float32)
    t = th.InferInput("input", list(x.shape), "FP32")
    t.set_data_from_numpy(x)
    for v in ("1", "2"):
        result = tc.infer(CNN, [t], model_version=v, headers=auth()).get_response()
        assert result["model_version"] == v
    assert not tc.is_model_ready(CNN, "3", headers=auth())
    with tg.InferenceServerClient(explicit.grpc_url) as gc:
        assert gc.is_model_ready(CNN, "1", headers=auth()) and not gc.is_model_ready(CNN, "3", headers=auth())


@pytest.mark.server
@pytest.mark.slow
def test_repository_calls_over_http_and_grpc(explicit, http):
    tc = th.InferenceServerClient(explicit.url.removeprefix("http://"))
    index = tc.get_model_repository_index(headers=auth())
    assert [(e["name"], e["version"], e["state"]) for e in index] == [
        (CNN, "1", "READY"), (CNN, "2", "READY"), (LSTM, "1", "READY")
    ]  # fmt: skip
    body = {"model": LSTM, "texts": ["the film is wonderful"]}
    tc.unload_model(LSTM, headers=auth())
    assert http.post("/v1/sentiment", json=body).status_code == 404
    assert {e["name"]: e["reason"] for e in tc.get_model_repository_index(headers=auth())}[LSTM] == "unloaded"
    tc.load_model(LSTM, headers=auth())
    assert http.post("/v1/sentiment", json=body).status_code == 200
    with tg.InferenceServerClient(explicit.grpc_url) as gc:
        gc.unload_model(LSTM, headers=auth())
        assert not gc.is_model_ready(LSTM, headers=auth())
        gc.load_model(LSTM, headers=auth())
        assert gc.is_model_ready(LSTM, headers=auth())
        ready = gc.get_model_repository_index(headers=auth(), as_json=True)["models"]
        assert {m["name"] for m in ready} == {CNN, LSTM}
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            gc.load_model(LSTM)
    with pytest.raises(InferenceServerException, match=r"\[404\].*no-such-model"):
        tc.unload_model("no-such-model", headers=auth())
    r = http.post("/v2/repository/models/no-such-model/load")  # (NNSERVE_MODELS is set here)
    assert r.status_code == 404 and "no-such-model" in r.json()["error"]
    r = http.post(f"/v2/repository/models/{LSTM}/load", json={"parameters": {"config": "{}"}})
    assert r.status_code == 400 and "on disk" in r.json()["error"]


@pytest.mark.server
@pytest.mark.slow
def test_a_bad_new_version_is_refused_and_the_old_ones_keep_serving(explicit, http, digits):
    folder = explicit.root_dir / CNN
    for version, damage in ((3, "bytes"), (4, "version")):
        shutil.copytree(folder / "2", folder / str(version))
        meta = json.loads((folder / str(version) / "model.json").read_text())
        if damage == "bytes":
            meta["version"] = str(version)
            with open(folder / str(version) / "model.onnx", "r+b") as f:
                f.seek(200)
                f.write(b"\xff\xfe\xfd")
        (folder / str(version) / "model.json").write_text(json.dumps(meta))  # version 4's still says "2"
        r = http.post(f"/v2/repository/models/{CNN}/load")
        assert r.status_code == 400, r.text
        assert ("sha256" if damage == "bytes" else "in the folder of version 4") in r.json()["error"]
        assert str(explicit.root_dir) not in r.json()["error"]  # the server's own paths stay its own
        assert http.get(f"/v1/models/{CNN}").json()["versions"] == ["1", "2"]
        assert classify(http, digits).status_code == 200
        # the index says why the version is not served (it said "not in the version policy": a helper's audit);
        # the worker asked may be either, and both followed the load
        entry = {e["version"]: e for e in http.post("/v2/repository/index", json={}).json() if e["name"] == CNN}
        assert entry[str(version)]["state"] == "UNAVAILABLE"
        assert entry[str(version)]["reason"] == "the last load failed: " + r.json()["error"].split(": ", 1)[1]
        shutil.rmtree(folder / str(version))
    # a repository audit's (2026-12-07): a version whose model.json is a folder (or a FIFO, a broken link) was left
    # out without a word, and its load answered 200
    (folder / "5" / "model.json").mkdir(parents=True)
    r = http.post(f"/v2/repository/models/{CNN}/load")
    assert r.status_code == 400 and "5/model.json: not a file" in r.json()["error"], r.text
    assert http.get(f"/v1/models/{CNN}").json()["versions"] == ["1", "2"]
    shutil.rmtree(folder / "5")
    # and: a model.json in the model's folder naming version 2, beside the folder 2/: one of them served, silently
    (folder / "model.json").write_text((folder / "2" / "model.json").read_text())
    r = http.post(f"/v2/repository/models/{CNN}/load")
    assert r.status_code == 400 and f"version 2 of {CNN} is on disk twice" in r.json()["error"], r.text
    (folder / "model.json").unlink()
    assert http.post(f"/v2/repository/models/{CNN}/load").status_code == 200  # the disk is good again
    assert all(e["reason"] == "" for e in http.post("/v2/repository/index", json={}).json() if e["name"] == CNN)


@pytest.mark.server
@pytest.mark.slow
def test_a_load_checks_the_files_of_a_version_already_served(explicit, http, digits):
    """A helper's audit: a load reused the session a worker held for a version (by the hashes model.json claims)
    without looking at the disk, so a graph truncated or a model.json rewritten (another input shape, the same
    hashes) answered 200 and READY; the metadata then disagreed with the graph (500s), and a restart failed."""
    v2 = explicit.root_dir / CNN / "2"
    graph, card = (v2 / "model.onnx").read_bytes(), (v2 / "model.json").read_text()
    try:
        (v2 / "model.onnx").write_bytes(graph[:1000])
        r = http.post(f"/v2/repository/models/{CNN}/load")
        assert r.status_code == 400 and "sha256" in r.json()["error"], r.text
        (v2 / "model.onnx").write_bytes(graph)
        meta = json.loads(card)
        meta["inputs"][0]["shape"] = [-1, 1, 32, 32]
        (v2 / "model.json").write_text(json.dumps(meta))
        r = http.post(f"/v2/repository/models/{CNN}/load")
        assert r.status_code == 400 and "graph inputs/outputs" in r.json()["error"], r.text
        assert classify(http, digits).status_code == 200  # the version served before serves on
    finally:
        (v2 / "model.onnx").write_bytes(graph)
        (v2 / "model.json").write_text(card)
    assert http.post(f"/v2/repository/models/{CNN}/load").status_code == 200


@pytest.mark.server
@pytest.mark.slow
def test_hot_swap_under_load_fails_no_request(explicit, artifact_root, digits):
    """Typed HTTP, /v2 over HTTP and over gRPC, two threads each, while a new version is loaded every 0.5 s."""
    with httpx.Client(base_url=explicit.url, timeout=60, headers=AUTH) as admin:
        swaps: list[dict] = []
        kinds = clients(explicit, png_bytes(np.asarray(digits.images[0][0])), CNN, headers=auth())
        result = drive(kinds, 2, 6.0, swapper(admin, explicit.root_dir / CNN, artifact_root / CNN, 0.5, swaps, keep=2))
    assert len(swaps) >= 8 and all(s["status"] == 200 for s in swaps), swaps
    assert all(s["served"] == [str(s["version"] - 1), str(s["version"])] for s in swaps), swaps
    for kind, r in result.items():
        assert r["sent"] > 20 and r["failed"] == 0, (kind, r)


@pytest.mark.server
@pytest.mark.slow
def test_poll_mode_loads_what_changes_on_disk(artifact_root, tmp_path):
    root = versioned_dir(tmp_path / "models", artifact_root, versions=(1,))
    srv = Server(root, tmp_path / "serve.log", NNSERVE_MODEL_CONTROL="poll", NNSERVE_REPOSITORY_POLL_S="0.3",
                 NNSERVE_REPOSITORY_OPEN="true").start()  # fmt: skip
    try:

        def versions() -> list[str] | None:
            r = httpx.get(f"{srv.url}/v2/models/{CNN}", timeout=10)
            return r.json()["versions"] if r.status_code == 200 else None

        def eventually(want) -> None:
            """``want`` from 10 requests in a row (new connections, so both workers answer): each worker switches
            when it takes the commit, and a check between the two saw the new version, then the old one."""
            deadline, streak, seen = time.monotonic() + 20, 0, None
            while streak < 10 and time.monotonic() < deadline:
                seen = versions()
                streak = streak + 1 if seen == want else 0
                time.sleep(0.05 if streak else 0.2)
            assert streak >= 10, f"last answer {seen}, wanted {want}:\n{srv.log()}"

        new_version(root, 2, artifact_root / CNN)
        eventually(["2"])
        r = httpx.post(f"{srv.url}/v2/repository/models/{CNN}/load", timeout=10)
        assert r.status_code == 400 and "explicit" in r.json()["error"]  # poll mode: the folder decides
        shutil.rmtree(root / CNN)
        eventually(None)
    finally:
        srv.stop()


def test_the_gate_of_the_repository_api():
    repo = lambda **kw: Repository(None, Settings(**kw))  # noqa: E731
    with pytest.raises(ApiError) as e:
        repo(model_control="explicit").check("load")  # no key, not opened
    assert e.value.status == 403
    for settings, action in (({"model_control": "none"}, "load"), ({"model_control": "poll"}, "unload")):
        with pytest.raises(ApiError) as e:
            repo(api_key="k", **settings).check(action)
        assert e.value.status == 400
    repo(api_key="k", model_control="explicit").check("load")
    repo(repository_open=True, model_control="none").check(None)  # the index, opened without a key


@pytest.mark.server
@pytest.mark.slow
def test_the_shared_server_keeps_its_repository_closed(client, tc):
    assert client.post("/v2/repository/index").status_code == 403  # no key configured, not opened
    r = client.post("/v2/repository/models/digits-cnn/load")
    assert r.status_code == 403 and "NNSERVE_API_KEY" in r.json()["error"]
    # the gate first: a parameter it would refuse was a 400 to a client the gate turns away (a gRPC audit's)
    r = client.post("/v2/repository/models/digits-cnn/load", json={"parameters": {"config": "{}"}})
    assert r.status_code == 403, r.text


def test_a_huge_model_json_is_read_no_further_than_a_load_would(tmp_path):
    """A repository audit's (2026-12-07): a 100 MB model.json was read and parsed whole on the event loop by every
    index call and poll scan (2 s each, the worker's /livez waiting); its load was refused at 1 MiB all along."""
    from service.runtime import _folder_version, metadata_head

    settings = Settings(model_dir=tmp_path)
    folder = tmp_path / "m"
    folder.mkdir()
    huge = b'{"pad": "' + b"x" * (settings.max_metadata_bytes + 10) + b'", "version": "7"}'
    (folder / "model.json").write_bytes(huge)
    assert len(metadata_head(folder / "model.json")) == settings.max_metadata_bytes + 1
    assert _folder_version(folder) == "1"  # read whole, it said "7"; its load names the limit
    (folder / "model.json").write_bytes(b'{"version": "7"}')
    assert _folder_version(folder) == "7"


def test_version_policy():
    from service.settings import VersionPolicy

    assert VersionPolicy().pick(["1", "2", "10"]) == ["10"]
    assert VersionPolicy(latest=2).pick(["1", "2", "10"]) == ["2", "10"]
    assert VersionPolicy(specific=["1", "10", "7"]).pick(["1", "2", "10"]) == ["1", "10"]
    with pytest.raises(ValueError):
        VersionPolicy(latest=1, specific=["1"])


def test_a_worker_that_starts_following_late_still_answers(tmp_path):
    """A load or unload issued while the second API worker is still starting (its command follower not yet
    running) completes once it follows: the command it finds waiting is carried out, not skipped."""
    import asyncio
    from types import SimpleNamespace

    def engine():
        meta = SimpleNamespace(name="m", version="1", onnx_sha256="0" * 64, generator=None, preprocessing=None)
        return SimpleNamespace(
            versions={"m": {"1": meta}}, catalog={"m": meta}, failed={}, load_failed={}, local={}, vocabs={}
        )

    settings = Settings(api_workers=2, model_control="explicit", repository_open=True)
    engines = [engine(), engine()]
    workers = [Repository(e, settings) for e in engines]
    for i, w in enumerate(workers):
        w.folder, w.index = tmp_path, i

    async def scenario() -> None:
        first = asyncio.create_task(workers[0]._follow())
        call = asyncio.create_task(workers[0].run("unload", "m"))
        await asyncio.sleep(0.3)  # the command is written; worker 1 does not follow yet
        assert not call.done() and "m" in engines[0].versions  # prepared, not switched: worker 1 has not answered
        late = asyncio.create_task(workers[1]._follow())
        await asyncio.wait_for(call, 5)
        first.cancel()
        late.cancel()

    asyncio.run(scenario())
    assert "m" not in engines[0].versions and "m" not in engines[1].versions


def test_a_load_a_worker_never_prepares_is_aborted_after_the_prepare_timeout(tmp_path, monkeypatch):
    """NNSERVE_PREPARE_TIMEOUT_S (a constant, 120 s, until a docs audit found no setting for it): a worker that
    does not answer the prepare phase aborts the load everywhere, with a 500 naming no worker's error."""
    import asyncio
    import time

    from service import repository

    monkeypatch.setattr(repository, "COMMIT_TIMEOUT_S", 0.2)  # nobody acknowledges the abort either
    worker = Repository(None, Settings(api_workers=2, model_control="explicit", prepare_timeout_s=0.3))
    worker.folder = tmp_path
    started = time.monotonic()
    with pytest.raises(ApiError) as e:
        asyncio.run(worker._coordinate("load", "m"))
    assert e.value.code == "internal_error" and "a worker did not answer" in e.value.message
    assert time.monotonic() - started < 5
    assert json.loads((tmp_path / "nnserve-repository.json").read_text())["phase"] == "abort"


def test_a_version_written_while_a_worker_starts_leaves_the_model_serving(artifact_root, tmp_path):
    """The engine reads the folder after its families have loaded theirs; a version that lands in between (a swap
    while a worker starts) is not the family's failure: the model keeps serving the versions loaded, and the
    repository's first poll loads the new one. (It was taken for a failed load and the whole model answered 503:
    tests/test_k8s.py's swap met it once a worker started late.) The engine is built for real, in a process of
    its own, with the new version written just before its own scan."""
    import os
    import subprocess
    import sys

    root = versioned_dir(tmp_path / "models", artifact_root, versions=(1,))
    code = (
        "import json; from pathlib import Path; import service.engine as engine; from bench.swap import new_version; "
        "from service.registry import load_tasks; scan = engine.discover\n"
        "def late(settings, *a):\n"
        f"    new_version(Path({str(root)!r}), 2, Path({str(artifact_root / CNN)!r}))\n"
        "    return scan(settings, *a)\n"
        "engine.discover = late; load_tasks(); e = engine.Engine()\n"
        f"print(json.dumps({{'failed': sorted(e.failed), 'versions': sorted(e.versions[{CNN!r}])}}))"
    )
    env = {**os.environ, "NNSERVE_MODEL_DIR": str(root), "NNSERVE_BATCHING": "api"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (root / CNN / "2" / "model.json").exists()  # it did land between the two scans
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"failed": [], "versions": ["1"]}


def test_loading_a_model_the_folder_does_not_hold_is_a_404(tmp_path):
    """It was a 400 quoting Python's errno text ("[Errno 2] No such file or directory: 'nosuch/model.json'")."""
    import asyncio

    repository = Repository(None, Settings(model_dir=tmp_path, model_control="explicit", repository_open=True))
    with pytest.raises(ApiError) as e:
        asyncio.run(repository.run("load", "nosuch"))
    assert (e.value.status, e.value.message) == (404, "no model named 'nosuch' in the model folder")
