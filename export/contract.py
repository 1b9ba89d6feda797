"""The artifact contract shared by training, export and service (torch-free).

An exported model is a directory::

    <name>/model.onnx     graph with a dynamic batch axis
    <name>/model.json     ModelMetadata below: labels, preprocessing, tensor schema, metrics, hashes

Everything the service needs to preprocess exactly as training did lives in ``model.json``, and the
functions here are the single implementation of that preprocessing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field

from export.ink import Ink, find_ink
from export.text import PAD_ID, UNK_ID, VOCAB_FILE, TokenizerConfig

SCHEMA_VERSION = 1
ONNX_FILE = "model.onnx"
METADATA_FILE = "model.json"

Fit = Literal["resize", "contain", "digit"]


class ImagePreprocessing(BaseModel):
    """How raw images become the model's input tensor (see ``prepare_image`` and ``normalize``)."""

    model_config = ConfigDict(extra="forbid")

    input_size: tuple[int, int] = Field(description="(height, width) of the model input")
    channels: Literal[1, 3]
    mean: list[float] = Field(description="per-channel mean of pixels scaled to [0, 1]")
    std: list[float] = Field(description="per-channel std of pixels scaled to [0, 1]")
    white_on_black: bool = Field(
        description="trained on bright ink on a dark background (MNIST); light-background inputs are inverted"
    )
    fit: Fit = Field(
        description="how an image of another size is fitted: 'resize' stretches, 'contain' keeps the aspect "
        "ratio and pads, 'digit' scales the ink's bounding box into a 20/28 box centred by mass (MNIST)"
    )


class TextPreprocessing(BaseModel):
    """How raw text becomes token ids (see ``export.text``); the vocabulary is a file beside the graph."""

    model_config = ConfigDict(extra="forbid")

    tokenizer: TokenizerConfig
    vocab_file: str = VOCAB_FILE
    vocab_sha256: str
    vocab_size: int
    pad_id: int = PAD_ID
    unk_id: int = UNK_ID


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    dtype: Literal["float32", "int64"]
    shape: list[int] = Field(description="-1 marks a dynamic axis")


class DatasetInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    source: str
    sha256: dict[str, str] = Field(default_factory=dict, description="file name -> sha256 of the source files")
    n_train: int
    n_val: int
    split_seed: int
    val_fraction: float
    split: Literal["stratified", "sentences"] = Field(
        "stratified", description="how validation was carved: per-class random, or whole sentences (SST-2)"
    )


class Parity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_sizes: list[int]
    seq_lens: list[int] = Field(default_factory=list, description="text models: sequence lengths checked")
    max_abs_diff: float
    rtol: float
    atol: float


class AnomalyThreshold(BaseModel):
    """Autoencoders: an input whose reconstruction error exceeds ``threshold`` is flagged as anomalous."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(description="squared error summed over pixels, per image")
    percentile: float = Field(description="of the validation errors the threshold was calibrated at")
    metric: Literal["sse"] = "sse"


class Calibration(BaseModel):
    """Classifiers: served probabilities are softmax(logits / temperature) (temperature scaling, Guo et al.
    2017), fitted on validation half A (export/calibrate.py); ECE (15 bins) and accuracy on half B."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(gt=0)
    fitted_on: str
    ece_before: dict[str, float] = Field(description="measured set -> expected calibration error at T = 1")
    ece_after: dict[str, float] = Field(description="measured set -> expected calibration error at T")
    accuracy: dict[str, float] = Field(default_factory=dict, description="measured set -> accuracy")


class OutOfDistribution(BaseModel):
    """Classifiers: how an input unlike the training data is told (export/calibrate.py)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["mahalanobis", "unknown-token-share"] = Field(
        description="'mahalanobis': distance of the penultimate features to the nearest class mean (a graph "
        "output); 'unknown-token-share': share of the text's tokens outside the vocabulary"
    )
    output: str | None = Field(None, description="the graph output holding the score, if the graph computes it")
    threshold: float = Field(description="scores above it are flagged out_of_distribution")
    fitted_on: str
    figures: dict[str, float] = Field(default_factory=dict, description="AUROC and flag rates on validation half B")


class GraphInfo(BaseModel):
    """A second graph shipped beside model.onnx (a VAE's encoder)."""

    model_config = ConfigDict(extra="forbid")
    file: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class GeneratorInfo(BaseModel):
    """Generators: how to drive model.onnx (latent z [+ labels] -> images)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["gan", "vae"]
    latent_dim: int
    conditional: bool = Field(description="the graph takes an int64 'labels' input; labels lists the classes")
    noise: Literal["standard-normal"] = Field(
        "standard-normal", description="z ~ N(0, I); the service draws it with numpy's default_rng(seed)"
    )
    value_range: tuple[float, float] = Field((0.0, 1.0), description="pixel range of the output images")
    encoder: GraphInfo | None = Field(None, description="VAE: image [+ labels] -> posterior mu, logvar")


class ModelMetadata(BaseModel):
    """``model.json``: everything needed to serve, describe and audit one exported model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    schema_version: int = SCHEMA_VERSION
    name: str
    version: str
    task: Literal["image-classification", "text-classification", "autoencoder", "generator"]
    architecture: str = Field(description="registry name of the nn.Module")
    architecture_config: dict[str, bool | int | float | str | list[int]]
    labels: list[str]
    preprocessing: ImagePreprocessing | TextPreprocessing
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int
    training: dict[str, bool | int | float | str | None] = Field(
        default_factory=dict, description="the training recipe: the checkpoint's train config (loss, optimiser, ...)"
    )
    metrics: dict[str, float] = Field(description="validation metrics measured at training time")
    class_metrics: dict[str, float] = Field(default_factory=dict, description="validation accuracy per label")
    dataset: DatasetInfo
    created: str
    onnx_sha256: str
    checkpoint_sha256: str
    source_commit: str
    torch_version: str
    parity: Parity
    anomaly: AnomalyThreshold | None = None
    generator: GeneratorInfo | None = None
    calibration: Calibration | None = None
    ood: OutOfDistribution | None = None

    def image_preprocessing(self) -> ImagePreprocessing:
        if not isinstance(self.preprocessing, ImagePreprocessing):
            raise TypeError(f"{self.name} is a {self.task} model, not an image model")
        return self.preprocessing

    def text_preprocessing(self) -> TextPreprocessing:
        if not isinstance(self.preprocessing, TextPreprocessing):
            raise TypeError(f"{self.name} is a {self.task} model, not a text model")
        return self.preprocessing


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_metadata(model_dir: str | Path) -> ModelMetadata:
    return ModelMetadata.model_validate_json(Path(model_dir, METADATA_FILE).read_bytes())


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------

# MPO: the multi-picture JPEG some phone cameras save; Pillow decodes its first picture, the photo itself
ACCEPTED_FORMATS = frozenset({"PNG", "JPEG", "MPO"})


class ImageError(ValueError):
    """An image the service must refuse; ``code`` maps to the HTTP error envelope."""

    def __init__(self, code: Literal["invalid_image", "image_too_large", "unsupported_media_type"], message: str):
        super().__init__(message)
        self.code = code


def decode_image(
    data: bytes, *, max_pixels: int, max_side: int | None = None, max_scans: int | None = None
) -> Image.Image:
    """Decode PNG/JPEG bytes, refusing non-images, other formats and decompression bombs.

    The pixel count (and with ``max_side`` each side) is checked from the header before any pixel is decoded;
    with ``max_scans`` so is a JPEG's number of scans (each scan of a progressive JPEG is a pass over the
    whole image: thousands cost seconds). Scans are counted by their start-of-scan markers (0xFFDA), which
    cannot occur inside entropy-coded data (a 0xFF there is followed by 0x00), so the count is an upper bound.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=None)
            fmt = img.format
            if fmt not in ACCEPTED_FORMATS:
                raise ImageError("unsupported_media_type", f"image format {fmt} is not supported; send PNG or JPEG")
            w, h = img.size
            if w < 1 or h < 1:
                raise ImageError("invalid_image", "image has no pixels")
            if w * h > max_pixels:
                raise ImageError("image_too_large", f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
            if max_side is not None and max(w, h) > max_side:
                raise ImageError("image_too_large", f"image is {w}x{h}; the limit is {max_side} pixels a side")
            if max_scans is not None and fmt in ("JPEG", "MPO") and (scans := data.count(b"\xff\xda")) > max_scans:
                raise ImageError("image_too_large", f"JPEG has {scans} scans; the limit is {max_scans}")
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("image_too_large", f"image refused as a decompression bomb: {e}") from None
    except Image.UnidentifiedImageError:
        raise ImageError("invalid_image", "not a PNG or JPEG image") from None
    except (OSError, SyntaxError, ValueError, EOFError):  # PIL's ways of saying "not a valid image"
        raise ImageError("invalid_image", "cannot decode image: not a complete, valid PNG or JPEG") from None
    return img


def _to_channels(img: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode -> 'L' or 'RGB'; transparency is composited over white (a canvas drawing's paper)."""
    with contextlib.suppress(Exception):  # broken EXIF metadata (any of Pillow's parser errors): pixels are fine
        img = ImageOps.exif_transpose(img) or img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        img = Image.fromarray(a.round().astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def _border_mean(a: np.ndarray) -> float:
    return float(np.concatenate([a[0].ravel(), a[-1].ravel(), a[:, 0].ravel(), a[:, -1].ravel()]).mean())


def _fit_ink(ink: Ink, size: tuple[int, int], fit: Fit) -> np.ndarray:
    """The ink found in a photo -> the model's field: nothing written gives a black field."""
    if ink.box is None:
        return np.zeros(size, dtype=np.uint8)
    top, left, bottom, right = ink.box
    crop = (ink.strength[top:bottom, left:right] * 255.0).round().astype(np.uint8)
    if fit == "digit":
        return _fit_digit(crop, size)
    return np.asarray(_fit_contain(Image.fromarray(crop), size, 0))


def _fit_digit(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """MNIST's preparation: the ink's bounding box, scaled to fit 20x20 (for 28x28) keeping its aspect,
    pasted so its centre of mass is at the centre of the field (LeCun et al. 1998, Section III.A)."""
    h, w = size
    ink = a > 0.25 * a.max() if a.max() > 0 else np.zeros_like(a, dtype=bool)
    if not ink.any():
        return np.asarray(Image.fromarray(a).resize((w, h), Image.Resampling.BILINEAR))
    rows, cols = np.nonzero(ink)
    crop = a[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    box = max(1, round(min(h, w) * 20 / 28))
    scale = box / max(crop.shape)
    nh, nw = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    small = np.asarray(Image.fromarray(crop).resize((nw, nh), Image.Resampling.LANCZOS), dtype=np.float64)
    total = small.sum()
    cy, cx = ((np.indices(small.shape) * small).reshape(2, -1).sum(1) / total) if total > 0 else (nh / 2, nw / 2)
    top = int(np.clip(round(h / 2 - cy), 0, h - nh))
    left = int(np.clip(round(w / 2 - cx), 0, w - nw))
    out = np.zeros((h, w), dtype=np.uint8)
    out[top : top + nh, left : left + nw] = np.clip(small.round(), 0, 255).astype(np.uint8)
    return out


def _fit_contain(img: Image.Image, size: tuple[int, int], fill: int | tuple[int, int, int]) -> Image.Image:
    h, w = size
    scale = min(h / img.height, w / img.width)
    nw, nh = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    canvas = Image.new(img.mode, (w, h), fill)
    canvas.paste(img.resize((nw, nh), Image.Resampling.LANCZOS), ((w - nw) // 2, (h - nh) // 2))
    return canvas


def prepare_image(img: Image.Image, pre: ImagePreprocessing) -> np.ndarray:
    """A decoded image of any size and mode -> uint8 array (C, H, W) in the model's pixel convention.

    An image already at the model's input size is taken pixel for pixel (after mode conversion and
    polarity), so the training set's own images pass through unchanged. Any other image, for a model
    trained on bright shapes on black with the 'digit' or 'contain' fit (MNIST, Fashion-MNIST), is read like
    a photo or scan: its ink is found with the background, lighting and polarity removed (export/ink.py),
    then fitted as the dataset was made.
    """
    size = (pre.input_size[0], pre.input_size[1])
    img = _to_channels(img, pre.channels)
    if pre.channels == 1:
        a = np.asarray(img, dtype=np.uint8)
        if a.shape != size and pre.white_on_black and pre.fit in ("digit", "contain"):
            return _fit_ink(find_ink(img, objects=pre.fit == "contain"), size, pre.fit)[None].copy()
        if pre.white_on_black and _border_mean(a) > 127.5:  # dark ink on light paper: flip to MNIST's polarity
            a = 255 - a
        if a.shape != size:
            if pre.fit == "digit":
                a = _fit_digit(a, size)
            elif pre.fit == "contain":
                a = np.asarray(_fit_contain(Image.fromarray(a), size, 0))
            else:
                a = np.asarray(Image.fromarray(a).resize(size[::-1], Image.Resampling.BILINEAR))
        return a[None].copy()
    if img.size != size[::-1]:
        img = (
            _fit_contain(img, size, (0, 0, 0))
            if pre.fit == "contain"
            else img.resize(size[::-1], Image.Resampling.BILINEAR)
        )
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def normalize(pixels: np.ndarray, pre: ImagePreprocessing) -> np.ndarray:
    """uint8 (..., C, H, W) -> float32 standardised with the training set's per-channel mean/std."""
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(pre.std, dtype=np.float32).reshape(-1, 1, 1)
    return ((pixels.astype(np.float32) * np.float32(1 / 255.0)) - mean) / std


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] (any shape) -> uint8, rounded."""
    return (np.clip(pixels, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def to_pil(pixels: np.ndarray) -> Image.Image:
    """(C, H, W) floats in [0, 1] -> an 'L' or 'RGB' image."""
    a = to_uint8(pixels)
    return Image.fromarray(a[0]) if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0))


def image_grid(images: np.ndarray, cols: int, pad: int = 2) -> Image.Image:
    """(N, C, H, W) floats in [0, 1] -> one image, ``cols`` per row, ``pad`` dark pixels between cells."""
    n, c, h, w = images.shape
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    canvas = np.zeros((c, rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.float32)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        canvas[:, top : top + h, left : left + w] = img
    return to_pil(canvas)
