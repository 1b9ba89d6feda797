"""What the two schemathesis suites share (tests/test_openapi_fuzz.py: nnserve's own document;
tests/test_oip_openapi.py: the protocol's): a reproducible run (a fixed seed, derandomized Hypothesis, no example
database) and the pytest 9.2 shim schemathesis needs."""

from __future__ import annotations

from collections.abc import Sequence

import hypothesis
import pytest
from schemathesis.config import SchemathesisConfig

SLOW = (hypothesis.HealthCheck.too_slow,)


def schemathesis_config(seed: int, max_examples: int, suppress: Sequence[str] = ()) -> SchemathesisConfig:
    """Every generation mode (valid and invalid requests), ``max_examples`` per operation, deterministic."""
    return SchemathesisConfig.from_dict(
        {
            "seed": seed,
            **({"suppress-health-check": list(suppress)} if suppress else {}),
            "generation": {"mode": "all", "max-examples": max_examples, "deterministic": True, "database": "none"},
        }
    )


def hypothesis_settings(max_examples: int, suppress: Sequence[hypothesis.HealthCheck] = SLOW) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(suppress),
    )


@pytest.fixture(autouse=True)
def node_id_for_schemathesis(request):
    """schemathesis 4.32.5's lazy schema reads and rewrites ``request.node._nodeid`` (to name each operation's
    subtest), an attribute pytest 9.2 no longer has (it keeps a structured ``_id``); give it one. A module that
    imports this fixture uses it."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid
