"""Why an answer is flagged (contract/reasons.py): a reason exactly when the flag is raised, the front door's reason
for each kind of odd picture, the order of precedence among a page's odd parts, and a text's reasons."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
from PIL import Image

from contract.images import read
from contract.ink import oddest
from contract.metadata import ModelMetadata, OutOfDistribution
from contract.reasons import REASONS, OodReason, beyond, image_reason
from contract.text import UNK_ID
from contract.text_ood import RARITY, UNKNOWN, text_ood_answer
from export.odd_images import skimage_photo
from tests.conftest import REPO
from tests.test_ink import DIGIT, PARAGRAPH, _number, _pad_drawing, _printed

GARMENT = DIGIT.model_copy(update={"fit": "contain"})


def test_the_vocabulary_is_the_served_type():
    assert tuple(REASONS) == get_args(OodReason) and all(REASONS.values())


def test_a_reason_exactly_when_the_answer_is_flagged():
    """``image_reason`` is not None exactly where ``ModelMetadata.ood_answer`` flags, over scores on either side
    of the threshold (and NaN, and none), front-door oddness below and above 1 (and none), blank and written
    fields, with a calibration and without."""
    written, blank = np.zeros((1, 28, 28), np.uint8), np.zeros((1, 28, 28), np.uint8)
    written[0, 10:18, 12:15] = 255
    for ood in (OutOfDistribution(method="energy", threshold=2.0, fitted_on="t"), None):
        meta = ModelMetadata.model_construct(ood=ood)
        for score in (None, 0.5, 2.0, 2.5, float("nan")):
            for oddness, why in ((None, ""), (0.3, "dot"), (1.0, "dot"), (1.5, "several_characters"), (3.0, "")):
                for field in (written, blank):
                    flagged = meta.ood_answer(score, oddness, field)[1]
                    reason = image_reason(beyond(ood, score), oddness, why, field)
                    assert (reason is not None) is flagged, (ood, score, oddness, field.max())
                    if field is blank:
                        assert reason == "nothing_written"
                    elif oddness is not None and oddness > 1:
                        assert reason == (why or "unlike_training_data")
                    elif flagged:
                        assert reason == "unlike_training_data"


def test_the_first_odd_part_in_order_of_precedence_gives_the_reason():
    assert oddest((0.5, "vivid_colours"), (2.0, "printed_text"), (3.0, "dot")) == (3.0, "printed_text")
    assert oddest((0.5, "vivid_colours"), (0.9, "dot")) == (0.9, "")  # none odd: no reason
    assert oddest((1.2, "vivid_colours"), (2.0, "several_characters")) == (2.0, "vivid_colours")


def _orange_page() -> Image.Image:
    a = np.full((200, 200, 3), (225, 115, 50), np.uint8)
    a[60:140, 95:105] = 20
    return Image.fromarray(a, "RGB")


@pytest.mark.parametrize(
    ("picture", "reason"),
    [
        (lambda digits: _printed(18, PARAGRAPH), "printed_text"),
        (lambda digits: _number(digits, 2, 6), "several_characters"),
        (lambda digits: _pad_drawing(lambda d: d.ellipse((129, 129, 151, 151), fill=17)), "dot"),
        (lambda digits: Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200), np.uint8)), None),
        (lambda digits: _orange_page(), "vivid_colours"),
        (lambda digits: Image.new("L", (300, 200), 215), "nothing_written"),
    ],
    ids=["print", "number", "dot", "noise", "orange page", "grey paper"],
)
def test_the_front_door_says_why_a_picture_is_unlike_any_page_of_digits(digits, picture, reason):
    """The served reason (the model's score aside) of a page of print, a number, a pad's dot, a page of noise
    (specks scattered over it or texture all over it: either is true), a digit on orange paper, blank paper."""
    r = read(picture(digits), DIGIT)
    why = image_reason(False, r.oddness, r.odd_reason, r.pixels)
    if reason is None:
        assert why in ("scattered_marks", "textured_page"), why
    else:
        assert why == reason, (why, r.oddness)


def test_a_scene_behind_a_product_is_said_so():
    """A garment model reads a photograph of grass as an object on a backdrop that is a scene."""
    r = read(skimage_photo("grass.png"), GARMENT)
    assert image_reason(False, r.oddness, r.odd_reason, r.pixels) == "textured_backdrop"


def test_a_text_says_which_part_of_its_score_flags_it():
    vocab = 1000
    ood = OutOfDistribution(
        method=f"{UNKNOWN}+{RARITY}", scaling={UNKNOWN: (0.0, 0.5), RARITY: (0.4, 0.1)}, threshold=1.0, fitted_on="t"
    )
    assert text_ood_answer(np.array([2, 3, 4, 5, 6, 7]), vocab, ood)[1] is None  # frequent words: in distribution
    assert text_ood_answer(np.full(8, UNK_ID), vocab, ood)[1] == "unknown_words"
    score, reason = text_ood_answer(np.arange(900, 940), vocab, ood)  # known words, all rare
    assert score > 1 and reason == "rare_words"
    old = OutOfDistribution(method=UNKNOWN, threshold=0.3, fitted_on="t")  # calibrated before word rarity
    assert text_ood_answer(np.array([2, UNK_ID, UNK_ID]), vocab, old) == (pytest.approx(2 / 3), "unknown_words")


def test_the_readme_says_what_each_reason_means():
    readme = (REPO / "README.md").read_text()
    for reason, meaning in REASONS.items():
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{reason}` |")), None)
        assert row is not None and row.endswith(f"| {meaning} |"), reason


def test_the_benches_count_the_reasons_the_service_gives(digits):
    """export/second_reading.py's ``served_answers`` (what the in-process benches read) gives a reason exactly for
    the answers it flags, the one the service would: the shipped mnist-cnn on a blank page, print, a number, grass
    and two digits photographed."""
    from contract.images import both_readings
    from contract.metadata import load_metadata
    from export.second_reading import served_answers
    from tests.test_ink import page

    folder = REPO / "artifacts" / "mnist-cnn"
    meta = load_metadata(folder)
    pictures = [
        Image.new("L", (300, 200), 230),
        _printed(18, PARAGRAPH),
        _number(digits, 2, 6),
        skimage_photo("grass.png"),
        *(page(digits.images[i, 0], 200, (40, 40), 110, paper=210, ink=40) for i in (0, 1)),
    ]
    readings = [both_readings(p, meta.image_preprocessing()) for p in pictures]
    served = served_answers(folder, meta, readings, second_reading=True)
    assert [r is not None for r in served.reasons] == served.flagged.tolist()
    assert served.reasons[:4] == ["nothing_written", "printed_text", "several_characters", "scattered_marks"]
    assert served.reasons[4:] == [None, None]


def test_the_playground_says_what_each_reason_means():
    """service/static/ui-core.js writes a flagged answer's reason in words from its own copy of REASONS."""
    import json
    import re

    js = (REPO / "service" / "static" / "ui-core.js").read_text()
    body = re.search(r"^NN\.REASONS = \{\n(.*?)^\};", js, re.S | re.M)
    assert body is not None
    copy = {k: json.loads(v) for k, v in re.findall(r"^  (\w+): (\".*\"),$", body.group(1), re.M)}
    assert copy == REASONS
