"""The torch-free preprocessing contract: modes, sizes, polarity, and refusal of bad images."""

import io
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from contract.images import REDUCE_ABOVE, ImageError, decode_image, normalize, prepare_image, read
from contract.metadata import ImagePreprocessing, nothing_written
from tests.conftest import png_bytes

REPO = Path(__file__).resolve().parent.parent
DIGIT = ImagePreprocessing(input_size=(28, 28), channels=1, mean=[0.13], std=[0.31], white_on_black=True, fit="digit")


def _digit_canvas(size=280, ink=0, paper=255):
    """A dark '1'-like stroke on white paper, the way a canvas drawing or phone photo arrives."""
    a = np.full((size, size), paper, dtype=np.uint8)
    a[size // 5 : 4 * size // 5, size // 2 - size // 30 : size // 2 + size // 30] = ink
    return a


def test_black_on_white_is_inverted_and_centred():
    out = prepare_image(Image.fromarray(_digit_canvas()), DIGIT)
    assert out.shape == (1, 28, 28) and out.dtype == np.uint8
    # background black, ink white: a stroke two output pixels wide peaks a little under 255, since the front
    # door averages sensor noise over a pixel at 256 px before thresholding, which softens a stroke's edges
    assert out[0, 0, 0] == 0 and out.max() >= 240
    rows, _ = np.nonzero(out[0] > 64)
    assert rows.max() - rows.min() + 1 == 20  # the ink's box scaled into 20x20, as MNIST
    assert abs(np.average(np.indices((28, 28))[0], weights=out[0]) - 14) < 1.0


def test_white_on_black_is_not_inverted():
    a = 255 - _digit_canvas()
    assert prepare_image(Image.fromarray(a), DIGIT)[0, 0, 0] == 0


def _in_mode(a: np.ndarray, mode: str) -> Image.Image:
    """An 8-bit grey drawing in ``mode``; 16-bit at its full range, as a 16-bit PNG holds it (Pillow's convert
    from 'L' keeps the values 0-255)."""
    return Image.fromarray(a.astype(np.uint16) * 257) if mode == "I;16" else Image.fromarray(a).convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "I;16", "L", "1", "CMYK"])
def test_any_mode_becomes_the_model_input(mode):
    img = _in_mode(_digit_canvas(64), mode)
    out = prepare_image(img, DIGIT)
    assert out.shape == (1, 28, 28) and out[0, 0, 0] == 0 and out.max() > 200


def test_transparent_canvas_drawing_is_composited_over_white():
    rgba = np.zeros((100, 100, 4), dtype=np.uint8)  # transparent black paper
    rgba[20:80, 45:55] = (0, 0, 0, 255)  # opaque black stroke
    out = prepare_image(Image.fromarray(rgba, "RGBA"), DIGIT)
    assert out[0, 0, 0] == 0 and out.max() > 200


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_a_pngs_transparent_value_is_composited_over_white_as_an_alpha_channel_is(mode):
    """A grey or colour PNG may mark one value transparent (a tRNS chunk): a white '1' on transparent black reads
    as its RGBA twin does (white on white: nothing written), not as white on black."""
    a = 255 - _digit_canvas(100)
    img = Image.open(io.BytesIO(_png(Image.fromarray(a).convert(mode))))
    assert img.info.get("transparency") in (0, (0, 0, 0))
    twin = np.dstack([a, a, a, np.where(a == 0, 0, 255).astype(np.uint8)])
    assert np.array_equal(prepare_image(img, DIGIT), prepare_image(Image.fromarray(twin, "RGBA"), DIGIT))
    assert not prepare_image(img, DIGIT).any()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", transparency=0 if img.mode == "L" else (0, 0, 0))
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGBA", "I;16", "P", "L"])
def test_a_large_image_is_reduced_first_and_read_as_its_smaller_self(mode):
    """Over 2 x REDUCE_ABOVE px a side, an image is reduced by a whole factor before any full-size copy; it reads
    as the same drawing at the reduced size (transparency averaged premultiplied: the hidden red of transparent
    paper does not bleed into the strokes, which would make the ink's colour odd)."""
    big = _digit_canvas(4 * REDUCE_ABOVE)
    small = _digit_canvas(REDUCE_ABOVE)
    if mode == "RGBA":
        img = np.zeros((*big.shape, 4), dtype=np.uint8)
        img[..., 0] = 255  # transparent red paper
        img[big == 0] = (0, 0, 0, 255)  # opaque black strokes
        big_img = Image.fromarray(img, "RGBA")
    else:
        big_img = _in_mode(big, mode)
    got, want = read(big_img, DIGIT), read(Image.fromarray(small).convert("RGB"), DIGIT)
    assert np.abs(got.pixels.astype(int) - want.pixels.astype(int)).max() <= 8
    assert got.oddness is not None and got.oddness < 0.5


def test_preparing_the_largest_rgba_image_the_limits_admit_stays_small():
    """A 5,000 x 5,000 RGBA PNG (97 KB: the pixel limit's) cost ~490 MB of one process at full size; reduced first,
    ~200 MB beyond its 95 MB of decoded pixels. Measured as the peak resident size of a fresh process."""
    code = (
        "import resource, struct, zlib\n"
        "from contract.images import decode_image, both_readings\n"
        "from tests.test_contract import DIGIT\n"
        "def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))\n"
        "co = zlib.compressobj(9)\n"
        "idat = b''.join(co.compress(b'\\0' * (5000 * 4 + 1)) for _ in range(5000)) + co.flush()\n"
        "png = b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 5000, 5000, 8, 6, 0, 0, 0))\n"
        "png += chunk(b'IDAT', idat) + chunk(b'IEND', b'')\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "both_readings(decode_image(png, max_pixels=25_000_000), DIGIT)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert int(out.stdout) < 320, f"{out.stdout.strip()} MB to read one 25-megapixel RGBA image"


def test_rgb_model_contain_keeps_aspect():
    pre = ImagePreprocessing(
        input_size=(32, 32), channels=3, mean=[0, 0, 0], std=[1, 1, 1], white_on_black=False, fit="contain"
    )
    out = prepare_image(Image.fromarray(np.full((20, 80, 3), 200, dtype=np.uint8)), pre)
    assert out.shape == (3, 32, 32)
    assert out[:, 0, 0].tolist() == [0, 0, 0] and out[:, 16, 16].tolist() == [200, 200, 200]


def test_normalize_matches_training_formula():
    px = np.array([[[0, 255]]], dtype=np.uint8)
    x = normalize(px, DIGIT)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [[[(0 - 0.13) / 0.31, (1 - 0.13) / 0.31]]], rtol=1e-6)


def test_decode_rejects_garbage_truncation_and_bombs():
    with pytest.raises(ImageError) as e:
        decode_image(b"definitely not an image", max_pixels=10**6)
    assert e.value.code == "invalid_image"
    good = png_bytes(_digit_canvas(64))
    with pytest.raises(ImageError) as e:
        decode_image(good[: len(good) // 2], max_pixels=10**6)
    assert e.value.code == "invalid_image"
    with pytest.raises(ImageError) as e:
        decode_image(huge_png_header(20000, 20000), max_pixels=25_000_000)
    assert e.value.code == "image_too_large"
    buf = io.BytesIO()
    Image.fromarray(_digit_canvas(32)).save(buf, format="GIF")
    with pytest.raises(ImageError) as e:
        decode_image(buf.getvalue(), max_pixels=10**6)
    assert e.value.code == "unsupported_media_type"
    assert decode_image(good, max_pixels=10**6).size == (64, 64)
    frames = [Image.fromarray(_digit_canvas(32)), Image.new("L", (32, 32), 255)]
    buf = io.BytesIO()  # WebP, lossless, animated: its first frame, pixel for pixel
    frames[0].save(buf, format="WEBP", lossless=True, save_all=True, append_images=frames[1:])
    img = decode_image(buf.getvalue(), max_pixels=10**6)
    assert img.format == "WEBP" and np.array_equal(np.asarray(img.convert("L")), np.asarray(frames[0]))
    with pytest.raises(ImageError) as e:
        decode_image(buf.getvalue(), max_pixels=1000)  # its size from the header, like any other image
    assert e.value.code == "image_too_large"


def huge_png_header(w: int, h: int) -> bytes:
    """A valid PNG that claims w x h pixels: a 1-bit image whose IDAT is tiny zlib of zero rows."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((w + 7) // 8)
    idat = zlib.compress(row * 64, 9)  # truncated data: the header alone must be enough to refuse it
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_blank_colour_page_is_nothing_written_after_per_channel_normalisation():
    """A colour model normalises each channel with its own mean and std: a white page is three values, one per
    channel, and still nothing written (it was answered by the graph, unflagged); one mark is something."""
    pre = ImagePreprocessing(
        input_size=(32, 32), channels=3, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3], white_on_black=False, fit="resize"
    )
    field = normalize(prepare_image(Image.new("RGB", (64, 64), (255, 255, 255)), pre), pre)
    assert len({float(v) for v in field.ravel()}) == 3 and nothing_written(field)
    marked = field.copy()
    marked[0, 5, 5] = 0.0
    assert not nothing_written(marked) and nothing_written(field[:1])


@pytest.mark.parametrize("size", [(2048, 1), (1, 4096), (4096, 3)])
def test_a_thin_jpeg_over_the_reduction_threshold_is_read(size):
    """Decoding at a reduced scale asked Pillow for a side of 0 pixels, which divided by zero (a 500)."""
    buf = io.BytesIO()
    Image.new("L", size, 200).save(buf, format="JPEG")
    img = decode_image(buf.getvalue(), max_pixels=25_000_000)
    assert prepare_image(img, DIGIT).shape == (1, 28, 28)


def test_a_16_bit_grey_png_reads_as_its_8_bit_twin():
    """An image audit: 16-bit greys were stretched from their own darkest to their lightest pixel, so a blank page
    with one level of sensor noise became marks (read as a '1', where its 8-bit twin is nothing written) and a
    digit 4 % darker than its paper became ink. They are brought to 8 bits by their depth, as the PNG holds them."""
    page = 235 + np.random.default_rng(5).normal(0, 0.6, (280, 280))
    faint = page.copy()
    faint[60:220, 130:150] *= 0.96
    for a in (page, faint):
        eight = Image.open(io.BytesIO(png_bytes(a.round().astype(np.uint8))))
        sixteen = Image.open(io.BytesIO(png_bytes((a * 257).round().astype(np.uint16))))
        assert sixteen.mode.startswith("I")
        got, want = read(sixteen, DIGIT), read(eight, DIGIT)
        assert np.abs(got.pixels.astype(int) - want.pixels.astype(int)).max() <= 1
        assert got.oddness == pytest.approx(want.oddness, abs=0.05) and got.odd_reason == want.odd_reason


def test_odd_but_harmless_files_are_read_or_named():
    """An image audit: a JPEG with broken EXIF wrote Pillow's warning to the log on every request; a PNG whose
    metadata decompresses past Pillow's 1 MiB was 'not a complete, valid' image; SVG and PDF were broken files."""
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (235, 235, 235)).save(jpeg, format="JPEG")
    j = jpeg.getvalue()
    broken_exif = j[:2] + b"\xff\xe1\x00\x16Exif\x00\x00MM\x00\x2a\x00\x00\x00" + b"\xff" * 6 + j[2:]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        prepare_image(decode_image(broken_exif, max_pixels=10**6), DIGIT)
    xmp = PngImagePlugin.PngInfo()
    xmp.add_itxt("XML:com.adobe.xmp", "<x>" + "a" * 1_100_000 + "</x>", zip=True)
    png = io.BytesIO()
    Image.new("L", (64, 64), 235).save(png, format="PNG", pnginfo=xmp)
    with pytest.raises(ImageError, match="metadata chunk") as e:
        decode_image(png.getvalue(), max_pixels=10**6)
    assert e.value.code == "image_too_large"
    pdf = io.BytesIO()
    Image.new("RGB", (28, 28)).save(pdf, format="PDF")
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"/>'
    for data, fmt in [(svg, "SVG"), (svg[22:], "SVG"), (pdf.getvalue(), "PDF")]:
        with pytest.raises(ImageError, match=f"image format {fmt} is not supported") as e:
            decode_image(data, max_pixels=10**6)
        assert e.value.code == "unsupported_media_type"
