"""Why an answer is flagged out of distribution (torch-free): one word of a bounded vocabulary, served beside the
flag (``ood_reason`` on /v1 and, on request, /v2; an autoencoder's ``anomaly_reason``) and counted by it
(``nnserve_out_of_distribution_total{model, reason}``), so that a user learns what to change (send one digit, not
a number; a page, not a scene) and an operator what the flags are.

An image's reason is the first that holds of: nothing written on it (the field is one value); the front door
finding the picture unlike any page or product photo (``Ink.oddness`` above 1, for the first of its odd parts in
order of precedence, contract/ink.py: ``oddest``); the model's own score above its threshold. A text's: the part of
its score past the threshold (unknown words, rare words: contract/text_ood.py), else no word of meaning.
"""

from __future__ import annotations

from typing import Literal, cast, get_args

import numpy as np

from contract.metadata import OutOfDistribution, nothing_written

OodReason = Literal[
    "nothing_written", "several_characters", "printed_text", "dot", "scattered_marks", "textured_page",
    "vivid_colours", "ink_colour", "textured_backdrop", "sparse_object", "unlike_training_data", "no_known_word",
    "unknown_words", "rare_words",
]  # fmt: skip
# the vocabulary: reason -> what it means (the README's table and the API's description are written from it)
REASONS: dict[OodReason, str] = {
    "nothing_written": "no pen strokes or object found: a blank or uniform page, or nothing standing out from it",
    "several_characters": "two or more marks side by side, as a number's digits are "
    "(or a digit written in pieces that stand apart)",
    "printed_text": "strokes as crowded as printed text",
    "dot": "a single dot of the pen",
    "scattered_marks": "marks scattered over a large area, as a scene's edges are, not pen strokes",
    "textured_page": "ink or texture all over the page around the marks, not plain paper",
    "vivid_colours": "colours more vivid than any paper: a scene, not a page",
    "ink_colour": "dark marks of a colour no pen of black, blue or grey ink has",
    "textured_backdrop": "a scene behind the object, not a plain backdrop",
    "sparse_object": "the object covers little of its box, as print or scattered marks do",
    "unlike_training_data": "the model's own score is above its threshold: unlike what it was trained on",
    "no_known_word": "no word of meaning the model knows",
    "unknown_words": "too many words the model does not know",
    "rare_words": "words rare in its training texts, as another language's are",
}
assert tuple(REASONS) == get_args(OodReason)
NOTHING_WRITTEN: OodReason = "nothing_written"
NO_KNOWN_WORD: OodReason = "no_known_word"
UNLIKE: OodReason = "unlike_training_data"


def image_reason(beyond: bool, oddness: float | None, odd_reason: str, pixels: np.ndarray) -> OodReason | None:
    """Why an image model's answer is flagged (None: it is not), as ``ModelMetadata.ood_answer`` and
    ``anomaly_answer`` flag it: ``beyond``, the model's own score (a classifier's ``ood_score``, an autoencoder's
    reconstruction error) is past its threshold; ``oddness`` and ``odd_reason``, the front door's
    (``contract.images.Reading``); ``pixels``, the prepared field."""
    if nothing_written(pixels):
        return NOTHING_WRITTEN
    if oddness is not None and oddness > 1:
        return cast(OodReason, odd_reason) if odd_reason in REASONS else UNLIKE
    return UNLIKE if beyond else None


def flag_reason(
    flagged: bool, beyond: bool, oddness: float | None, odd_reason: str, pixels: np.ndarray
) -> OodReason | None:
    """The reason served for an answer the model's rule flagged or not (``flagged``: ``ood_answer``'s or
    ``anomaly_answer``'s, which the temperature reads too): ``image_reason``, the model's own where none other
    holds, so a flagged answer always has one; None for an answer not flagged."""
    return (image_reason(beyond, oddness, odd_reason, pixels) or UNLIKE) if flagged else None


def beyond(ood: OutOfDistribution | None, score: float | None) -> bool:
    """Is a classifier's own ``score`` past its threshold (no calibration: never)?"""
    return ood is not None and ood.beyond(score)
