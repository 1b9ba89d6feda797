"""A digit inside a closed line that does not touch it (contract/enclosure.py, through the photo front door): a
teacher's circle or a form's printed box is dropped and the digit read alone; a digit's own loops, a speck inside
one, a line touching the digit or left open are left as they are."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from contract import enclosure
from contract.enclosure import inside_enclosure
from contract.images import prepare_image
from tests.test_ink import DIGIT, page, similarity


@pytest.fixture(scope="module")
def two(digits) -> np.ndarray:
    return digits.images[int(np.flatnonzero(digits.labels == 2)[0]), 0]


def drawn(shapes, size: int = 256) -> np.ndarray:
    """Strength in [0, 1] of white shapes drawn on black: ``shapes`` is a list of (method, box, width)."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    for method, box, width in shapes:
        if method == "line":
            draw.line(box, fill=255, width=width)
        elif method == "arc":  # a circle left open on its right, from 40 to 320 degrees
            draw.arc(box, 40, 320, fill=255, width=width)
        else:
            getattr(draw, method)(box, outline=255, width=width)
    return np.asarray(img, dtype=np.float32) / 255


def with_line(photo: Image.Image, method: str, box, width: int, ink: int) -> Image.Image:
    out = photo.copy()
    getattr(ImageDraw.Draw(out), method)(box, outline=ink, width=width)
    return out


@pytest.mark.parametrize("method", ["ellipse", "rectangle"])
def test_a_circled_or_boxed_digit_is_read_without_the_line(two, method):
    photo = page(two, 320, (100, 100), 120, paper=215, ink=40)
    assert similarity(prepare_image(photo, DIGIT)[0], two) > 0.85
    marked = with_line(photo, method, (55, 50, 265, 270), width=9, ink=40)
    enclosed = inside_enclosure(drawn([(method, (55, 50, 265, 270), 9), ("line", (120, 110, 200, 210), 9)], 320))
    assert enclosed is not None and not enclosed[54, 160] and enclosed[160, 160]  # the line out, its inside kept
    assert similarity(prepare_image(marked, DIGIT)[0], two) > 0.85


def test_a_digits_own_loops_and_a_speck_inside_one_are_left_alone():
    zero = [("ellipse", (70, 30, 190, 230), 14)]
    assert inside_enclosure(drawn(zero)) is None
    assert inside_enclosure(drawn([*zero, ("ellipse", (125, 125, 133, 133), 8)])) is None  # a speck: too small
    eight = [("ellipse", (80, 20, 180, 120), 12), ("ellipse", (70, 115, 190, 235), 12)]
    assert inside_enclosure(drawn(eight)) is None


def test_a_line_touching_the_digit_or_left_open_changes_nothing():
    ring = ("ellipse", (30, 30, 226, 226), 10)
    assert inside_enclosure(drawn([ring, ("line", (128, 20, 128, 180), 10)])) is None  # crosses the circle
    opened = [("arc", (30, 30, 226, 226), 10), ("line", (128, 70, 128, 180), 10)]
    assert inside_enclosure(drawn(opened)) is None  # a C, not a closed circle


def test_a_circle_of_dashes_still_closes():
    """A pencil's circle breaks into dashes: gaps of a few pixels, against the ring's 200, still close it."""
    dashes = [("arc", (30, 30, 226, 226), 10, a, a + 27) for a in range(0, 360, 30)]  # 3-degree gaps: ~5 px
    img = Image.new("L", (256, 256), 0)
    draw = ImageDraw.Draw(img)
    for _, box, width, start, end in dashes:
        draw.arc(box, start, end, fill=255, width=width)
    draw.line((128, 70, 128, 180), fill=255, width=10)
    enclosed = inside_enclosure(np.asarray(img, dtype=np.float32) / 255)
    assert enclosed is not None and enclosed[128, 128] and not enclosed[128, 35]


def test_ink_all_round_the_border_is_no_enclosure():
    """No paper reaches the border (a frame of ink, a table read as ink around the sheet): nothing to drop, and
    no error."""
    framed = drawn([("rectangle", (0, 0, 255, 255), 12), ("line", (128, 70, 128, 180), 10)])
    assert inside_enclosure(framed) is None
    assert inside_enclosure(np.ones((256, 256), dtype=np.float32)) is None


RING = ("ellipse", (30, 30, 226, 226), 8)  # its line covers rows 30-37 at the top


def test_each_guard_alone_keeps_a_loop_that_holds_no_digit():
    blob = [RING, ("ellipse", (115, 115, 141, 141), 26)]  # dense, many cells, but a fifth of the ring's height
    assert inside_enclosure(drawn(blob)) is None
    thick = [("ellipse", (30, 30, 226, 226), 24), ("line", (128, 78, 128, 178), 2)]  # half its height, few cells
    assert inside_enclosure(drawn(thick)) is None
    tiny = np.zeros((24, 24), dtype=np.float32)  # a 14-px ring round a 5-px stroke: 5 cells, under MIN_INNER_CELLS
    tiny[5:19, 5:19] = drawn([("ellipse", (0, 0, 13, 13), 1)], 14)
    tiny[10:15, 12] = 1.0
    assert inside_enclosure(tiny) is None


def test_a_0s_dot_or_a_slash_that_does_not_touch_it_is_still_a_0():
    narrow = [("ellipse", (100, 30, 160, 230), 3), ("ellipse", (123, 123, 137, 137), 7)]
    assert inside_enclosure(drawn(narrow)) is None
    slashed = [("ellipse", (70, 30, 190, 230), 6), ("line", (150, 60, 110, 200), 6)]
    assert inside_enclosure(drawn(slashed)) is None


def test_the_digit_is_kept_whole_and_the_lines_faint_edge_is_not():
    close = drawn([RING, ("line", (128, 48, 128, 200), 8)])  # the stroke ends 10 px below the line
    enclosed = inside_enclosure(close)
    assert enclosed is not None
    digit = close.copy()
    digit[:44] = digit[210:] = 0  # the ring's rows above and below the stroke
    digit[:, :110] = digit[:, 146:] = 0
    assert enclosed[digit >= 0.5].all()  # every pixel of the stroke, even those a cell from the line
    assert not enclosed[43, 108]  # 3 px inside the line (rows 32-40 here): its faint edge, not the digit's


def test_a_winding_line_costs_a_bounded_number_of_steps(monkeypatch):
    """A zig-zag of ink inside a box, joined to it at one end, makes the flood along the ink crawl row after row
    (247 steps here without a bound): it stops at PASSES steps and the ink is read as it is. The paper outside
    settles in a step or two, so PASSES and the few grows around it are all it may take."""
    a = np.zeros((64, 64), dtype=np.float32)
    s = a[8:56, 8:56]  # under 48 px of ink: one pixel a cell
    s[0, :] = s[-1, :] = s[:, 0] = s[:, -1] = 1.0
    for i, row in enumerate(range(6, 42, 6)):
        s[row, 6:42] = 1.0
        s[row : row + 7, 41 if i % 2 == 0 else 6] = 1.0
    s[1:6, 6] = 1.0  # the zig-zag's end joined to the box
    calls = []
    real = enclosure._grow
    monkeypatch.setattr(enclosure, "_grow", lambda m, diagonal: calls.append(1) or real(m, diagonal))
    assert inside_enclosure(a) is None
    assert enclosure.PASSES <= 128 and len(calls) <= enclosure.PASSES + 3 * enclosure.GAP + 8
