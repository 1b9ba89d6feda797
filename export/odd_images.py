"""What careless users send an image classifier that is no digit or garment: blank and uniform pages, noise,
pages of printed text and photographs of the world, for export/calibrate.py's and bench/photos.py's
out-of-distribution figures; and a sentiment model text in other languages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from contract.images import read
from contract.metadata import ModelMetadata
from contract.photos import Door

# photographs bundled inside scikit-image's wheel (skimage/data): scenes, animals, objects, textures, people,
# microscopy, astronomy; its 200 small faces (LFW) are sampled every 20th
SKIMAGE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
    "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png",
    "retina.jpg", "rocket.jpg", "microaneurysms.png",
)  # fmt: skip


def skimage_photo(name: str) -> Image.Image:
    """One of the pictures inside scikit-image's wheel (skimage/data), loaded."""
    import skimage

    return Image.open(Path(skimage.__file__).parent / "data" / name).copy()


def natural_photographs() -> list[Image.Image]:
    """Photographs of the world, none of a digit or a lone garment: the two inside scikit-learn, those inside
    scikit-image, 10 of its faces (25 x 25, shown at 200 x 200), and 4 random square crops of each colour
    photograph (a photo of part of a scene); then (added on 2026-12-04, with the front door's colour cue) the one
    inside matplotlib, scikit-image's other motorcycle, and 8 more crops of each colour photograph, 20-80 % of
    its shorter side: 167 in all."""
    import matplotlib
    import skimage
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    photos += [skimage_photo(name) for name in SKIMAGE_PHOTOS]
    faces = np.load(Path(skimage.__file__).parent / "data" / "lfw_subset.npy")[::20]
    photos += [Image.fromarray((f * 255).round().astype(np.uint8)).resize((200, 200)) for f in faces]
    colour = [im for im in photos if im.mode == "RGB" and min(im.size) >= 200]
    more = [Image.open(Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg").copy()]
    more.append(skimage_photo("motorcycle_right.png"))
    return (
        photos
        + square_crops(colour, 4, (0.3, 0.7), np.random.default_rng(0))
        + more
        + square_crops(colour + more, 8, (0.2, 0.8), np.random.default_rng(12345))
    )


def square_crops(
    photos: list[Image.Image], each: int, share: tuple[float, float], rng: np.random.Generator
) -> list[Image.Image]:
    """``each`` random square crops of every photo, their side ``share`` of its shorter side."""
    crops = []
    for im in photos:
        for _ in range(each):
            side = int(min(im.size) * rng.uniform(*share))
            x, y = int(rng.integers(0, im.width - side)), int(rng.integers(0, im.height - side))
            crops.append(im.crop((x, y, x + side, y + side)))
    return crops


def odd_images() -> dict[str, list[Image.Image]]:
    """What careless users send that is no digit or garment: blank and uniform pages, noise, photographed pages
    of printed text (drawn here, and scikit-image's scanned page), and ``natural_photographs``."""
    from PIL import ImageDraw

    rng = np.random.default_rng(7)
    sets: dict[str, list[Image.Image]] = {
        "blank white page": [Image.new("L", (300, 300), 255)],
        "uniform grey paper": [Image.new("L", (300, 300), v) for v in (215, 230, 128)],
        "page of noise": [Image.fromarray(rng.integers(0, 256, (300, 300), dtype=np.uint8)) for _ in range(5)],
        "natural photograph": natural_photographs(),
    }
    text = []
    for k in range(5):
        page = Image.new("L", (400, 300), 235)
        draw = ImageDraw.Draw(page)
        for line in range(12):
            words = " ".join("".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 5)) for _ in range(8))
            draw.text((10, 8 + 24 * line), words, fill=30 + 10 * k)
        text.append(page)
    text.append(skimage_photo("page.png"))
    sets["photo of printed text"] = text
    return sets


def odd_inputs(meta: ModelMetadata) -> dict[str, tuple[np.ndarray, Door]]:
    """``odd_images`` through the model's front door -> per kind, (N, 1, H, W) uint8 and what the front door
    found of each (``Door``)."""
    pre = meta.image_preprocessing()
    out = {}
    for name, imgs in odd_images().items():
        readings = [read(im, pre) for im in imgs]
        out[name] = np.stack([r.pixels for r in readings]), Door.of(readings)
    return out


# a review in another language: a sentiment model trained on English is out of its distribution
OTHER_LANGUAGES = [
    "Ce film est une merveille, les acteurs sont excellents et la musique est inoubliable.",
    "Der Film war viel zu lang und die Geschichte hat mich überhaupt nicht berührt.",
    "La película es aburrida, los personajes no tienen ninguna profundidad.",
    "Il ristorante era pieno ma il servizio è stato rapido e il cibo ottimo.",
    "Dit boek is prachtig geschreven en ik kon het niet wegleggen.",
    "Filmen var alldeles för lång och skådespelarna verkade uttråkade.",
    "Este produto chegou quebrado e o suporte nunca respondeu.",
    "Kitap çok sıkıcıydı, sonunu bile merak etmedim.",
]
