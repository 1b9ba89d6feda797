"""A digit inside a closed line (contract/enclosure.py, through the photo front door): a teacher's circle or a
form's printed box, clear of the digit or touching it, is dropped and the digit read alone; a digit's own loops, a
speck inside one, a line left open or crossed out, and what a touching line's peel cannot tell from the line are
left as they are."""

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
    """Strength in [0, 1] of white shapes drawn on black: ``shapes`` is a list of (method, box, width), an arc's
    with its start and end angles after them."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    for method, box, width, *args in shapes:
        if method == "line":
            draw.line(box, fill=255, width=width)
        elif method == "arc":  # a circle left open on its right, from 40 to 320 degrees (or as given)
            draw.arc(box, *(args or (40, 320)), fill=255, width=width)
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


def test_a_line_left_open_or_crossed_out_changes_nothing():
    # a stroke from outside the circle into it: a slashed 0, a 1 drawn through a circle
    crossed = [("ellipse", (60, 60, 256, 256), 10), ("line", (158, 30, 158, 210), 10)]
    assert inside_enclosure(drawn(crossed, 320)) is None
    opened = [("arc", (30, 30, 226, 226), 10), ("line", (128, 70, 128, 180), 10)]
    assert inside_enclosure(drawn(opened)) is None  # a C, not a closed circle


def test_a_line_touching_what_it_encloses_is_peeled_off():
    """A stroke inside a circle, touching it (the line covers rows 30-39 at the top): the line goes, as a band of
    its own width from the paper outside, and what lies further in is kept."""
    enclosed = inside_enclosure(drawn([("ellipse", (30, 30, 226, 226), 10), ("line", (128, 36, 128, 190), 10)]))
    assert enclosed is not None and enclosed[128, 128] and enclosed[60, 128]
    assert not enclosed[128, 35] and not enclosed[34, 128]  # the line, beside the stroke and where it touches


def test_a_digit_sitting_on_its_boxs_line_is_read_without_the_box(two):
    photo = page(two, 320, (100, 100), 120, paper=215, ink=40)
    rows, cols = np.nonzero(np.asarray(photo) < 128)
    box = (int(cols.min()) - 40, int(rows.min()) - 40, int(cols.max()) + 40, int(rows.max()) + 4)
    marked = with_line(photo, "rectangle", box, width=9, ink=40)  # the box's bottom line through the digit's foot
    assert inside_enclosure(np.asarray(marked) < 128) is not None
    assert similarity(prepare_image(marked, DIGIT)[0], two) > 0.85


def test_a_speck_inside_a_touching_line_does_not_keep_it_from_being_peeled():
    """A speck clear of both the line and the stroke touching it is too little to read on its own (INNER_INK,
    INNER_EXTENT): the line is still peeled, and the stroke read with the speck; but the speck counts for neither
    the height rule nor the middle rule, so a small or off-middle stroke is still left with its line."""
    ring, speck = ("ellipse", (30, 30, 226, 226), 10), ("ellipse", (70, 120, 76, 126), 6)
    enclosed = inside_enclosure(drawn([ring, ("line", (128, 36, 128, 190), 10), speck]))
    assert enclosed is not None and enclosed[128, 128] and enclosed[123, 73] and not enclosed[128, 35]
    small, off_middle = ("line", (128, 140, 128, 220), 14), ("line", (60, 40, 60, 190), 10)
    assert inside_enclosure(drawn([ring, small, ("ellipse", (124, 70, 132, 78), 8)])) is None
    assert inside_enclosure(drawn([ring, off_middle, ("ellipse", (190, 124, 198, 132), 8)])) is None


def test_a_line_thicker_on_one_side_is_not_a_drawing_inside_it():
    """A circle gone over again on its left, 30 px wide where the rest is 8: peeled at the rest's width, what is
    left of that side has the line along half of its outline (over TOUCH), so it is the line's own, not a stroke
    touching it."""
    ring = [("ellipse", (30, 30, 226, 226), 8), ("arc", (30, 30, 226, 226), 30, 140, 220)]
    assert inside_enclosure(drawn(ring)) is None


def test_a_small_drawing_touching_a_big_line_is_left_as_it_is():
    """Under PEELED_EXTENT of the line's height, what a touching line encloses is taken for the core of a thick
    stroke: clear of the line, the same stroke is kept (INNER_EXTENT)."""
    ring = ("ellipse", (30, 30, 226, 226), 10)
    assert inside_enclosure(drawn([ring, ("line", (128, 140, 128, 220), 14)])) is None
    assert inside_enclosure(drawn([ring, ("line", (128, 120, 128, 200), 14)])) is not None


def test_a_touching_drawing_off_the_lines_middle_or_in_many_pieces_is_left_as_it_is():
    """What a touching line encloses is read only when its middle is in the middle half of the line's box
    (CENTRED: a strip along one side is a piece of a sheet's own edge) and it is at most MAX_PIECES pieces."""
    box = ("rectangle", (30, 30, 226, 226), 10)
    assert inside_enclosure(drawn([box, ("line", (128, 40, 128, 190), 10)])) is not None
    assert inside_enclosure(drawn([box, ("line", (60, 40, 60, 190), 10)])) is None
    strokes = [("line", (x, 40, x, 150), 10) for x in range(60, 200, 34)]  # 5 strokes hanging from the top
    assert inside_enclosure(drawn([box, *strokes[:4]])) is not None
    assert inside_enclosure(drawn([box, *strokes])) is None


def test_pieces_hugging_the_line_go_with_it():
    """A circle gone over again at its top and bottom, 30 px wide there where the rest is 8: what the peel leaves of
    those parts is in the line's middle and tall enough together, but has the line along much of its outline (over
    TOUCH), so it goes with the line."""
    r = (30, 30, 226, 226)
    assert inside_enclosure(drawn([("ellipse", r, 8), ("arc", r, 30, 75, 105), ("arc", r, 30, 255, 285)])) is None


@pytest.mark.parametrize("label", [1, 7])
def test_a_stroke_across_a_tight_circle_is_read_though_it_hugs_the_line(digits, label):
    """A 1 or a 7 circled tightly, as ``bench.circled`` draws it (on a 56-px canvas, a circle 3 px outside the
    digit's longer side, in a pen as wide as MNIST's), then photographed: the stroke touches the line at both ends
    and runs beside it, so the line is along over TOUCH of its outline, but it reaches further than REACH of the
    line's height into the circle, as the core of a line gone over a few times its width does not (the 7 is one of
    the sample 7s read only with REACH)."""
    digit = digits.images[int(np.flatnonzero(digits.labels == label)[{1: 0, 7: 2}[label]]), 0]
    canvas = Image.new("L", (56, 56), 0)
    canvas.paste(Image.fromarray(digit), (14, 14))
    rows, cols = np.nonzero(np.asarray(canvas) > 127)
    cy, cx = (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2
    r = max(np.ptp(rows), np.ptp(cols)) / 2 + 3
    ImageDraw.Draw(canvas).ellipse((cx - r, cy - r, cx + r, cy + r), outline=255, width=3)
    photo = page(np.asarray(canvas), 320, (20, 20), 280, paper=215, ink=40)
    assert inside_enclosure(np.asarray(photo) < 128) is not None
    assert similarity(prepare_image(photo, DIGIT)[0], digit) > 0.8


def test_a_line_at_the_photos_edge_is_not_peeled():
    """A box whose left side lies at the frame's edge has no paper outside that side to measure its band from: left
    as it is, not read with a piece of the line."""
    box = drawn([("rectangle", (6, 40, 200, 226), 8), ("line", (100, 46, 100, 200), 8)])
    box[:, :5] = 0  # contract/ink.py clears the photo's outermost pixels
    assert inside_enclosure(box) is None
    assert inside_enclosure(np.roll(box, 40, axis=1)) is not None  # the same, clear of the edge


def test_a_thick_line_is_peeled_off_at_its_own_width():
    """A line 6 cells wide round a stroke touching it: peeled one cell wide, the rest of the line would hug what
    lies further in (over TOUCH) and nothing would be kept."""
    line = [("ellipse", (30, 30, 226, 226), 24), ("line", (128, 50, 128, 170), 24)]
    enclosed = inside_enclosure(drawn(line))
    assert enclosed is not None and enclosed[100, 128] and not enclosed[128, 45]


def test_a_circle_of_dashes_still_closes():
    """A pencil's circle breaks into dashes: gaps of a few pixels, against the ring's 200, still close it."""
    dashes = [("arc", (30, 30, 226, 226), 10, a, a + 27) for a in range(0, 360, 30)]  # 3-degree gaps: ~5 px
    enclosed = inside_enclosure(drawn([*dashes, ("line", (128, 70, 128, 180), 10)]))
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


def test_strokes_winding_from_a_line_that_touches_them_cost_a_bounded_number_of_steps(monkeypatch):
    """Four zig-zags hanging inside a box, joined to it: the peel's floods (the band's, the pieces') are bounded
    like the others, PASSES steps each."""
    a = np.zeros((64, 64), dtype=np.float32)
    s = a[8:56, 8:56]
    s[0, :] = s[-1, :] = s[:, 0] = s[:, -1] = 1.0
    for k in range(4):
        for j in range(3):
            row = 2 + 6 * k + 2 * j
            s[row, 1 if j == 0 else 2 : 42] = 1.0
            if j < 2:
                s[row : row + 3, 41 if j == 0 else 2] = 1.0
    calls = []
    real = enclosure._grow
    monkeypatch.setattr(enclosure, "_grow", lambda m, diagonal: calls.append(1) or real(m, diagonal))
    inside_enclosure(np.kron(a, np.ones((4, 4), dtype=np.float32)))
    assert 0 < len(calls) <= 3 * enclosure.PASSES
