"""The README's usage examples run as written against a real server over the shipped artifacts, and print what
the README shows (tests/readme_examples.py: the runner, the comparison and its tolerance)."""

from __future__ import annotations

import pytest

from tests import readme_examples as rx

EXAMPLES = rx.collect(rx.README.read_text())


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory):
    from tests.server import Server

    srv = Server(rx.REPO / "artifacts", tmp_path_factory.mktemp("readme") / "serve.log", **rx.SERVER_ENV).start()
    yield srv
    srv.stop()


def test_the_usage_section_has_examples_and_each_shows_its_output():
    assert len(EXAMPLES) >= 10
    assert {ex.lang for ex in EXAMPLES} == {"bash", "python"}
    missing = [ex.id for ex in EXAMPLES if ex.expected is None]
    assert not missing, f"examples without an output block: {missing}"


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=[ex.id for ex in EXAMPLES])
def test_example_prints_what_the_readme_shows(shipped_server, example):
    assert example.expected is not None
    printed = rx.run(example, f"127.0.0.1:{shipped_server.port}", shipped_server.grpc_url)
    problems = rx.compare(example.expected, printed)
    assert not problems, f"{example.id} printed something else (make readme rewrites the outputs):\n" + "\n".join(
        problems
    )


# ---- the comparison itself: stale outputs must fail ----------------------------------------------------


def test_floats_within_tolerance_pass_and_stale_figures_fail():
    shown = '{"model": "mnist-ae", "threshold": 8.9172, "results": [{"error": 1.5003, "anomaly": false}]}'
    printed = '{"model":"mnist-ae","threshold":8.91724,"results":[{"error":1.50031,"anomaly":false}]}'
    assert rx.compare(shown, printed) == []
    stale = rx.compare(
        '{"model": "mnist-ae", "threshold": 17.70, "results": [{"error": 2.42, "anomaly": false}]}',
        '{"model":"mnist-ae","threshold":8.9172,"results":[{"error":1.5003,"anomaly":false}]}',
    )
    assert any("threshold" in p for p in stale) and any("error" in p for p in stale)


def test_ellipses_cut_strings_and_arrays_but_nothing_else():
    shown = '{"codes": [[-0.82548, -3.7177, "…"]], "png": "iVBORw0K…"}'
    assert rx.compare(shown, '{"codes": [[-0.82548, -3.7177, 0.1, 0.2]], "png": "iVBORw0KGgo="}') == []
    assert rx.compare(shown, '{"codes": [[-1.96, -4.05, 0.1]], "png": "iVBORw0KGgo="}')  # stale codes
    assert rx.compare(shown, '{"codes": [[-0.82548]], "png": "iVBORw0KGgo="}')  # shorter than shown
    assert rx.compare(shown, '{"codes": [[-0.82548, -3.7177]], "png": "R0lGODlh"}')  # another format
    assert rx.compare('{"a": 1}', '{"a": 1, "b": 2}')  # an unexpected field
    assert rx.compare('{"a": 1, "…": "…"}', '{"a": 1, "b": 2}') == []
    assert rx.compare('{"tokens": 8}', '{"tokens": 9}')  # integers are exact
    assert rx.compare('{"ok": true}', '{"ok": 1}')  # and types count


def test_text_output_compares_words_exactly_and_numbers_with_tolerance():
    assert rx.compare("[[-4.39, 3.79]]\n(4, 1, 28, 28)", "[[-4.3901, 3.79]]\n(4, 1, 28, 28)") == []
    assert rx.compare("(4, 1, 28, 28)", "(4, 1, 28, 27)")
    assert rx.compare("200 image/png", "415 application/json")
    assert rx.compare("[[-4.39, 3.79]]", "[[-4.1, 3.79]]")


def test_update_round_trips(tmp_path):
    """What --update writes is what the comparison accepts for the same output."""
    printed = '{"model":"m","score":0.999934567,"samples":["' + "A" * 60 + '"],"codes":[[1.5,2.5,3.5,4.5,5.5,6.5,7.5]]}'
    assert rx.compare(rx.rendered(printed), printed) == []
    assert "…" in rx.rendered(printed)
