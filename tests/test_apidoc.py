"""docs/API.md is generated from the route schemas (service/apidoc.py) and must match them."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.readme_examples import REPO


def test_api_reference_matches_the_schemas():
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNSERVE_")}  # the documented defaults
    env["BENTOML_DO_NOT_TRACK"] = "True"
    out = subprocess.run(
        [sys.executable, "-m", "service.apidoc"], cwd=REPO, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out == (REPO / "docs" / "API.md").read_text(), "docs/API.md is stale: run make api-doc"


def test_api_reference_names_every_route_field_and_default():
    text = (REPO / "docs" / "API.md").read_text()
    for route in ("POST /v1/classify`", "POST /v1/sentiment`", "POST /v1/classify/upload`", "GET /v1/models/{name}`"):
        assert f"## `{route}" in text
    assert "| `tokens_read` | int |" in text and "| `model` | string | `'sst2-gru-distilled'` |" in text


def test_every_setting_has_a_line_in_the_readme():
    """Each limit (and every other setting) has a row in the README's Limits or Settings table."""
    import re

    from service.settings import Settings

    readme = (REPO / "README.md").read_text()
    rows = set(re.findall(r"^\|[^|]*\| [^|]* \| `(NNSERVE_[A-Z0-9_]+)` \||^\| `(NNSERVE_[A-Z0-9_]+)` \|", readme, re.M))
    documented = {a or b for a, b in rows}
    names = [f"NNSERVE_{name.upper()}" for name in Settings.model_fields]
    missing = [name for name in names if name not in documented]
    assert not missing, f"settings without a README row: {missing}"
