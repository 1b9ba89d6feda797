"""A model's figures (service/figures.py): GET /v1/models/{name}/figures/{figure} on real servers over the test
artifacts (curves.png drawn by the recipe as training draws it; the Hopfield network's patterns.png written by its
export), and read_figures on real folders of files, links, a FIFO and oversized PNGs.

What is checked: the card lists the PNGs its folder held at load; each is served byte for byte as image/png with
the sha256 ETag (304 when If-None-Match names it); an unknown model, version or figure is a 404 envelope naming what
there is; traversal in every spelling, other files of the folder and overlong names are a 400 or 404 envelope and
never a file's bytes; a symlink is never followed, an oversized file never read whole; the figures of a version are
those of its last load (a hot swap brings the new version's); the route is one metric label however many names are
asked."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil

import httpx
import numpy as np
import pytest

from bench.swap import new_version
from service.figures import FIGURE_NAME, PNG_SIGNATURE, matches, read_figures
from tests.conftest import assert_envelope, png_bytes
from tests.server import Server

CNN, LENET, HOPFIELD = "digits-cnn", "digits-lenet5", "digits-hopfield"
LABEL = "/v1/models/{name}/figures/{figure}"


def etag(body: bytes) -> str:
    return f'"{hashlib.sha256(body).hexdigest()}"'


def png(seed: int, side: int = 40) -> bytes:
    return png_bytes(np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8))


def raw_get(url: str, target: str) -> tuple[int, dict[str, str], bytes]:
    """A GET of ``target`` exactly as written (no client normalises its dot segments or escapes) ->
    (status, headers, body)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


# ---- read_figures on real folders --------------------------------------------------------------------------------


def test_only_regular_png_files_within_the_limit_are_read(tmp_path):
    folder, outside = tmp_path / "model", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    curves, secret = png(0), png(1)
    (folder / "curves.png").write_bytes(curves)
    (outside / "secret.png").write_bytes(secret)
    (folder / "secret.png").symlink_to(outside / "secret.png")  # a link out of the folder
    (folder / "again.png").symlink_to(folder / "curves.png")  # a link, even to a figure of the folder
    (folder / "big.png").write_bytes(PNG_SIGNATURE + bytes(10_000))
    (folder / "fake.png").write_bytes(b"model.onnx bytes, not a PNG")
    (folder / "dir.png").mkdir()
    os.mkfifo(folder / "pipe.png")  # opened without blocking, then refused: not a regular file
    (folder / "notes.txt").write_bytes(png(2))
    (folder / "UPPER.PNG").write_bytes(png(3))
    (folder / ".hidden.png").write_bytes(png(4))
    found = read_figures(folder, max_bytes=len(curves) + 100, max_count=32)
    assert list(found) == ["curves.png"]
    assert found["curves.png"].body == curves and found["curves.png"].etag == etag(curves)
    assert (
        read_figures(folder, max_bytes=len(curves) - 1, max_count=32) == {}
    )  # the limit is on what is read, not on stat
    assert read_figures(tmp_path / "missing", 1 << 20, 32) == {}  # never raises: the model serves without figures


def test_at_most_max_figures_per_version(tmp_path):
    from service.settings import Settings

    default = Settings().max_figures  # NNSERVE_MAX_FIGURES (a constant until a docs audit found no setting for it)
    for i in range(default + 8):
        (tmp_path / f"f{i:03d}.png").write_bytes(png(i, side=4))
    found = read_figures(tmp_path, 1 << 20, default)
    assert default == 32 and list(found) == [f"f{i:03d}.png" for i in range(default)]
    assert list(read_figures(tmp_path, 1 << 20, Settings(max_figures=3).max_figures)) == [
        "f000.png",
        "f001.png",
        "f002.png",
    ]


def test_if_none_match():
    tag = etag(b"x")
    assert matches(tag, tag) and matches(f'"other", W/{tag}', tag) and matches("*", tag)
    assert not matches(None, tag) and not matches('"other"', tag) and not matches(tag[:-2] + '"', tag)
    assert re.fullmatch(FIGURE_NAME, "curves.png") and not re.fullmatch(FIGURE_NAME, "../curves.png")


# ---- the route, on the shared server -----------------------------------------------------------------------------


def on_disk(folder) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


@pytest.mark.server
@pytest.mark.slow
def test_every_card_lists_its_figures_and_serves_them_byte_for_byte(client, artifact_root):
    cards = {c["name"]: c for c in client.get("/v1/models").json()["models"]}
    assert "curves.png" in cards[CNN]["figures"] and "curves.png" in cards[LENET]["figures"]
    assert "patterns.png" in cards[HOPFIELD]["figures"]
    for name, card in cards.items():
        assert card["figures"] == on_disk(artifact_root / name), name
        assert client.get(f"/v1/models/{name}").json()["figures"] == card["figures"]
        for figure in card["figures"]:
            r = client.get(f"/v1/models/{name}/figures/{figure}")
            body = (artifact_root / name / figure).read_bytes()
            assert r.status_code == 200 and r.content == body, (name, figure)
            assert r.headers["content-type"] == "image/png" and r.headers["etag"] == etag(body)
            assert r.headers["cache-control"] == "no-cache" and r.headers["x-model-version"] == card["version"]


@pytest.mark.server
@pytest.mark.slow
def test_a_conditional_get_is_a_304_while_the_figure_is_the_same(client, artifact_root):
    path = f"/v1/models/{CNN}/figures/curves.png"
    tag = etag((artifact_root / CNN / "curves.png").read_bytes())
    for held in (tag, f"W/{tag}", f'"stale", {tag}', "*"):
        r = client.get(path, headers={"if-none-match": held})
        assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == tag, held
    for held in ('"stale"', tag[:-2] + '"', ""):
        assert client.get(path, headers={"if-none-match": held}).status_code == 200, held
    assert client.get(path, params={"version": "1"}, headers={"if-none-match": tag}).status_code == 304


@pytest.mark.server
@pytest.mark.slow
def test_unknown_models_versions_and_figures_are_404_envelopes(client):
    err = assert_envelope(client.get("/v1/models/nope/figures/curves.png"), 404, "model_not_found")
    assert CNN in err["details"][0]["available"]
    err = assert_envelope(client.get(f"/v1/models/{CNN}/figures/curves.png?version=9"), 404, "model_not_found")
    assert err["details"] == [{"versions": ["1"]}]
    err = assert_envelope(client.get(f"/v1/models/{CNN}?version=9"), 404, "model_not_found")  # the card too
    assert err["details"] == [{"versions": ["1"]}]
    err = assert_envelope(client.get(f"/v1/models/{HOPFIELD}/figures/samples.png"), 404, "not_found")
    assert err["details"] == [{"figures": client.get(f"/v1/models/{HOPFIELD}").json()["figures"]}]
    assert "samples.png" in err["message"] and HOPFIELD in err["message"]
    # 'name@version' is how /v1 bodies reach a version inside the Engine, never a name (the card was a 500)
    for path in (f"/v1/models/{CNN}@1", f"/v1/models/{CNN}@1/figures/curves.png"):
        assert_envelope(client.get(path), 400, "invalid_request")


HOSTILE = [
    "../model.json",
    "..%2Fmodel.json",
    "%2e%2e%2fmodel.onnx",
    "%2E%2E",
    "..",
    ".",
    "..%5Cmodel.json",
    "..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "model.onnx",
    "model.json",
    "curves.png%00.onnx",
    "curves.png%2F..%2Fmodel.onnx",
    "curves.png/",
    "curves.png/..",
    ".curves.png",
    "CURVES.PNG",
    "curves.png.",
    "curves%20.png",
    "%E2%80%AEgnp.sevruc",
    "%ff.png",
    "a" * 61 + ".png",
    "b" * 20_000 + ".png",  # past the 16 KiB head: the transport's 431 (decided on the raw bytes)
]


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("figure", HOSTILE, ids=lambda f: f[:24])
def test_hostile_figure_names_never_reach_a_file(server, artifact_root, figure):
    for model in (CNN, "..", "%2e%2e", f"{CNN}%2F..", f"{CNN}@1", "x" * 65):
        target = f"/v1/models/{model}/figures/{figure}"
        status, headers, body = raw_get(server.url, target)
        if len(figure) > 16_000:
            assert status == 431, status
            continue
        if status == 200:  # a trailing slash is the same route: only a real model's real figure is served
            assert target.endswith("/") and model == CNN and figure[:-1] == "curves.png", (model, figure)
            continue
        assert status in (400, 404), (model, figure, status, body[:200])
        assert headers["content-type"] == "application/json" and set(json.loads(body)) == {"error"}
        for f in ("model.onnx", "model.json", "curves.png"):
            assert (artifact_root / CNN / f).read_bytes()[:64] not in body


@pytest.mark.server
@pytest.mark.slow
def test_the_route_is_one_metric_label(client):
    series = re.compile(r'^(?:bentoml_service_request_total|nnserve_errors_total)\{.*?endpoint="([^"]*)"', re.M)

    def endpoints() -> set[str]:
        return set(series.findall(client.get("/metrics").text))

    for i in range(50):
        client.get(f"/v1/models/{CNN}/figures/f{i}.png")
        client.get(f"/v1/models/m{i}/figures/curves.png")
    client.get(f"/v1/models/{CNN}/figures/curves.png")
    seen = endpoints()
    assert LABEL in seen
    assert not any("curves" in e or re.search(r"/m\d|/f\d", e) for e in seen), seen


# ---- figures are read at load, and swap with their version -------------------------------------------------------


@pytest.mark.server
@pytest.mark.slow
def test_figures_are_read_at_load_and_swap_with_the_version(artifact_root, tmp_path):
    key = "figures-test-key"
    root = tmp_path / "models"
    new_version(root, 1, artifact_root / LENET)
    v1 = root / LENET / "1"
    first = (v1 / "curves.png").read_bytes()
    (tmp_path / "secret.png").write_bytes(png(7))
    (v1 / "secret.png").symlink_to(tmp_path / "secret.png")
    (v1 / "big.png").write_bytes(PNG_SIGNATURE + bytes(len(first) + 1_000))
    srv = Server(
        root,
        tmp_path / "serve.log",
        NNSERVE_API_KEY=key,
        NNSERVE_MODEL_CONTROL="explicit",
        NNSERVE_VERSION_POLICY=json.dumps({LENET: {"latest": 2}}),
        NNSERVE_MAX_FIGURE_BYTES=str(len(first) + 500),
    )
    srv.start()
    try:
        with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {key}"}, timeout=60) as c:
            assert c.get(f"/v1/models/{LENET}").json()["figures"] == ["curves.png"]
            for figure in ("secret.png", "big.png"):  # a link out of the folder; a file over the limit
                err = assert_envelope(c.get(f"/v1/models/{LENET}/figures/{figure}"), 404, "not_found")
                assert err["details"] == [{"figures": ["curves.png"]}]
            r = c.get(f"/v1/models/{LENET}/figures/curves.png")
            assert r.content == first and r.headers["x-model-version"] == "1"
            (v1 / "curves.png").write_bytes(png(8))  # changed on disk: still the bytes read at load
            (v1 / "late.png").write_bytes(png(9))
            assert c.get(f"/v1/models/{LENET}/figures/curves.png").content == first
            assert c.get(f"/v1/models/{LENET}/figures/late.png").status_code == 404

            new_version(root, 2, artifact_root / LENET)  # version 2 with figures of its own, hot-swapped in
            (root / LENET / "2" / "curves.png").write_bytes(png(10))
            shutil.copy(root / LENET / "2" / "curves.png", root / LENET / "2" / "samples.png")
            assert c.post(f"/v2/repository/models/{LENET}/load").status_code == 200
            card = c.get(f"/v1/models/{LENET}").json()
            assert card["version"] == "2" and card["figures"] == ["curves.png", "samples.png"]
            r = c.get(f"/v1/models/{LENET}/figures/curves.png", headers={"if-none-match": etag(first)})
            assert r.status_code == 200 and r.content == png(10) and r.headers["x-model-version"] == "2"
            # the load read version 1 again too: its figures are now those on disk
            r = c.get(f"/v1/models/{LENET}/figures/curves.png", params={"version": "1"})
            assert r.content == png(8) and r.headers["etag"] == etag(png(8))
            assert c.get(f"/v1/models/{LENET}/figures/late.png?version=1").content == png(9)
            assert_envelope(c.get(f"/v1/models/{LENET}/figures/samples.png?version=1"), 404, "not_found")
            assert httpx.get(f"{srv.url}/v1/models/{LENET}/figures/curves.png").status_code == 401  # the key
    finally:
        srv.stop()
