"""/v1/recall and the recall task's /v2 face over real HTTP, against a real ``bentoml serve`` with a real ONNX
Hopfield network (30 of scikit-learn's digits stored with the pseudo-inverse rule, tests/conftest.py)."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from contract.metadata import load_metadata
from tests.conftest import assert_envelope, png_bytes

pytestmark = [pytest.mark.server, pytest.mark.slow]
MODEL = "digits-hopfield"
N = 784


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def stored(artifact_root) -> tuple[np.ndarray, list[str]]:
    """The stored patterns (30, 784) ±1, read back from the artifact's patterns.png (a column per class, a row
    per pattern of it, cells of 28 + 2 pixels), and their labels."""
    labels = load_metadata(artifact_root / MODEL).labels
    grid = np.asarray(Image.open(artifact_root / MODEL / "patterns.png").convert("L"))
    classes = list(dict.fromkeys(labels))
    k = len(labels) // len(classes)
    out = np.zeros((len(labels), N), dtype=np.int64)
    for r in range(k):
        for c in range(len(classes)):
            cell = grid[2 + 30 * r : 30 + 30 * r, 2 + 30 * c : 30 + 30 * c]
            out[c * k + r] = np.where(cell.ravel() > 127, 1, -1)
    return out, labels


def flipped(pattern: np.ndarray, share: float, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    cue = pattern.copy()
    cue[rng.choice(N, size=round(share * N), replace=False)] *= -1
    return cue.tolist()


def recall(client, **body) -> dict:
    r = client.post("/v1/recall", json={"model": MODEL, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_corrupted_stored_pattern_is_restored(client, stored):
    patterns, labels = stored
    chosen = [0, 7, 15, 29]
    body = recall(client, states=[flipped(patterns[i], 0.15, seed=i) for i in chosen])
    assert body["model"] == MODEL and body["version"] == "1" and body["rule"] == "pseudo-inverse"
    assert body["patterns"] == 30 and body["match_overlap"] == 0.9 and body["binarize"] == 0.5
    assert len(body["results"]) == 4
    for i, res in zip(chosen, body["results"], strict=True):
        assert res["state"] == patterns[i].tolist()
        assert (res["matched"], res["label"], res["spurious"]) == (i, labels[i], False)
        assert res["overlap"] == pytest.approx(1.0) and res["outcome"] == "fixed-point"
        assert res["sweeps"] == len(res["energies"]) >= 2 and res["energies"][-1] == res["energies"][-2]
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(res["image"]))))
        assert img.shape == (28, 28) and np.array_equal(np.where(img.ravel() > 127, 1, -1), patterns[i])


def test_a_stored_pattern_is_a_fixed_point_at_once(client, stored):
    patterns, _ = stored
    res = recall(client, states=[patterns[3].tolist()])["results"][0]
    assert (res["sweeps"], res["outcome"], res["matched"]) == (1, "fixed-point", 3)


def test_images_are_binarised_and_recalled(client, digits):
    images = [b64(png_bytes(a[0])) for a in digits.images[-12:]]
    results = recall(client, images=images)["results"]
    assert len(results) == 12
    for res in results:
        assert len(res["state"]) == N and set(res["state"]) <= {-1, 1}
        assert res["outcome"] in ("fixed-point", "2-cycle", "max-sweeps") and res["sweeps"] == len(res["energies"])
        assert res["spurious"] == (res["matched"] is None) == (res["label"] is None)
        assert res["spurious"] or res["overlap"] >= 0.9
    assert sum(not r["spurious"] for r in results) >= 8
    right = [r["label"] == str(y) for r, y in zip(results, digits.labels[-12:], strict=True) if not r["spurious"]]
    assert np.mean(right) >= 0.5


def test_rows_do_not_depend_on_their_batch(client, stored):
    patterns, _ = stored
    cues = [flipped(patterns[i], 0.3, seed=100 + i) for i in range(8)]
    together = recall(client, states=cues)["results"]
    alone = [recall(client, states=[c])["results"][0] for c in cues]
    assert together == alone


def test_max_sweeps_stops_recall(client, stored):
    patterns, _ = stored
    res = recall(client, states=[flipped(patterns[5], 0.3, seed=1)], max_sweeps=1)["results"][0]
    assert (res["sweeps"], res["outcome"]) == (1, "max-sweeps")


def test_v2_runs_the_same_recall(tc, client, stored):
    import tritonclient.http as triton

    patterns, _ = stored
    cues = np.asarray([flipped(patterns[i], 0.2, seed=200 + i) for i in (1, 2, 20)], dtype=np.float32)
    inp = triton.InferInput("state", list(cues.shape), "FP32")
    inp.set_data_from_numpy(cues * 0.5)  # read by sign
    result = tc.infer(MODEL, [inp])
    v1 = recall(client, states=cues.astype(int).tolist())["results"]
    assert np.array_equal(result.as_numpy("state"), np.asarray([r["state"] for r in v1], dtype=np.float32))
    assert result.as_numpy("sweeps").tolist() == [r["sweeps"] for r in v1]
    assert result.as_numpy("matched").tolist() == [-1 if r["matched"] is None else r["matched"] for r in v1]
    np.testing.assert_allclose(result.as_numpy("energy"), [r["energies"][-1] for r in v1], rtol=1e-6)
    assert result.as_numpy("overlaps").shape == (3, 30)
    meta = tc.get_model_metadata(MODEL)
    assert meta["inputs"] == [{"name": "state", "datatype": "FP32", "shape": [-1, N]}]
    assert [o["name"] for o in meta["outputs"]] == ["state", "energy", "sweeps", "overlaps", "matched"]


def test_v2_refuses_the_wrong_shape(client):
    for shape in ([1, 10], [65, N]):
        body = {
            "inputs": [{"name": "state", "shape": shape, "datatype": "FP32", "data": [1.0] * (shape[0] * shape[1])}]
        }
        assert client.post(f"/v2/models/{MODEL}/infer", json=body).status_code == 400


def test_model_card(client):
    card = client.get(f"/v1/models/{MODEL}").json()
    assert card["task"] == "recall" and card["architecture"] == "hopfield-pseudo-inverse" and card["ready"]
    assert card["labels"] == [str(c) for c in range(10) for _ in range(3)]
    assert card["inputs"] == [{"name": "state", "dtype": "float32", "shape": [-1, N]}]
    assert card["metrics"]["recall_00"] == 1.0 and card["preprocessing"]["input_size"] == [28, 28]


ONE = [1] * N


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": MODEL}, 400, "invalid_request"),
        ({"model": MODEL, "states": [ONE], "images": ["aGk="]}, 400, "invalid_request"),
        ({"model": MODEL, "states": []}, 400, "invalid_request"),
        ({"model": MODEL, "images": []}, 400, "invalid_request"),
        ({"model": MODEL, "states": [[1, -1]]}, 400, "invalid_request"),
        ({"model": MODEL, "states": [[0, *ONE[1:]]]}, 400, "invalid_request"),
        ({"model": MODEL, "states": [[2, *ONE[1:]]]}, 400, "invalid_request"),
        ({"model": MODEL, "states": [[True, *ONE[1:]]]}, 400, "invalid_request"),
        ({"model": MODEL, "states": [[1.0, *ONE[1:]]]}, 400, "invalid_request"),
        ({"model": MODEL, "states": [ONE] * 65}, 400, "invalid_request"),
        ({"model": MODEL, "states": [ONE], "max_sweeps": 0}, 400, "invalid_request"),
        ({"model": MODEL, "states": [ONE], "max_sweeps": 501}, 400, "invalid_request"),
        ({"model": MODEL, "states": [ONE], "max_sweeps": "3"}, 400, "invalid_request"),
        ({"model": MODEL, "states": [ONE], "extra": 1}, 400, "invalid_request"),
        ({"model": MODEL, "images": [b64(b"not an image")]}, 400, "invalid_image"),
        ({"model": "nope", "states": [ONE]}, 404, "model_not_found"),
        ({"model": "digits-cnn", "states": [ONE]}, 404, "model_not_found"),
    ],
)
def test_errors(client, body, status, code):
    assert_envelope(client.post("/v1/recall", json=body), status, code)


def test_a_million_bad_units_cost_one_error_each_state(client):
    """60 states of 16,384 zeros (a 2 MB body, every unit wrong, just under NNSERVE_MAX_JSON_ITEMS): one error per
    state, not one per unit, so the answer is a quick 400 instead of a million error objects."""
    import time

    body = (
        b'{"model": "%s", "states": [' % MODEL.encode()
        + b",".join([b"[" + b",".join([b"0"] * 16_384) + b"]"] * 60)
        + b"]}"
    )
    t0 = time.perf_counter()
    r = client.post("/v1/recall", content=body, headers={"content-type": "application/json"})
    err = assert_envelope(r, 400, "invalid_request")
    assert "unit 0 is 0" in err["message"] and time.perf_counter() - t0 < 5


def test_a_long_bad_unit_is_named_in_a_few_characters():
    """A routes audit's (2026-12-07): one unit of 60 MB of "x" was written whole into the message (repr, then the
    envelope's copy): 2.4 s of the worker's CPU and 465 MiB to refuse it, 3-6 times a 60 MB body elsewhere."""
    from pydantic import ValidationError

    from service.tasks.recall import RecallPatternsRequest

    with pytest.raises(ValidationError) as e:
        RecallPatternsRequest(model=MODEL, states=[["x" * 10_000_000]])
    message = e.value.errors()[0]["msg"]
    assert message.startswith("Value error, unit 0 is 'xxx") and "...x" in message and len(message) < 100


def test_an_empty_body_or_another_media_type_is_refused(client):
    assert_envelope(client.post("/v1/recall", content=b"", headers={"content-type": "application/json"}), 400,
                    "invalid_request")  # fmt: skip
    r = client.post("/v1/recall", content=b"states=1", headers={"content-type": "text/plain"})
    assert_envelope(r, 415, "unsupported_media_type")


def test_recalls_are_counted(client, stored):
    recall(client, states=[stored[0][4].tolist()])
    text = client.get("/metrics").text
    assert re.search(r'^nnserve_recalls_total\{model="digits-hopfield",result="matched"\} [1-9]', text, re.M)
    assert re.search(r'^nnserve_recall_sweeps_count\{model="digits-hopfield"\} [1-9]', text, re.M)
