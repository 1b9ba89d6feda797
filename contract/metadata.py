"""The artifact contract shared by training, export and service (torch-free).

An exported model is a directory::

    <name>/model.onnx     graph with a dynamic batch axis
    <name>/model.json     ModelMetadata below: labels, preprocessing, tensor schema, metrics, hashes

Everything the service needs to preprocess exactly as training did lives in ``model.json``, and the
functions here are the single implementation of that preprocessing.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from contract.text import PAD_ID, UNK_ID, VOCAB_FILE, TokenizerConfig

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
    """How raw text becomes token ids (see ``contract.text``); the vocabulary is a file beside the graph."""

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
    columns: dict[str, str] = Field(default_factory=dict, description="a table's text and label columns, as read")

    @staticmethod
    def recorded_split(how: str | None) -> Literal["stratified", "sentences"]:
        """A training split's name (``--split``: random, sentences; images: none) -> how it is recorded here."""
        return "sentences" if how == "sentences" else "stratified"

    def same_split(self, other: DatasetInfo) -> bool:
        """The same source files carved the same way: neither model's validation rows were the other's training."""
        return (self.sha256, self.split, self.val_fraction, self.split_seed) == (
            other.sha256,
            other.split,
            other.val_fraction,
            other.split_seed,
        )


# what model.json's ``architecture_config`` and ``training`` hold, and so what a model card shows of them: one
# definition, so that the card can never refuse a value the artifact accepted
ConfigValue = bool | int | float | str | list[int]
TrainingValue = bool | int | float | str | list[str] | list[float] | None


class OtherCorpus(BaseModel):
    """A teacher trained on another corpus than its student (training/distillation.py: other_corpus)."""

    model_config = ConfigDict(extra="forbid")

    file: str
    sha256: str
    short_validation_texts_found: int = Field(description="the student's short validation texts found in it")


class Teacher(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    onnx_sha256: str
    other_corpus: OtherCorpus | None = None
    share: float = Field(1.0, description="its share of the teachers' average, relative to the others'")


class UnlabelledTexts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str
    sha256: str
    sentences: int


class Distillation(BaseModel):
    """A student's teachers (training/distillation.py), named down to their graphs' bytes."""

    model_config = ConfigDict(extra="forbid")

    teachers: list[Teacher]
    teacher_weight: float
    temperature: float
    teachers_agree_with_labels: float = Field(description="training rows whose label is the teachers' top class")
    unlabelled: UnlabelledTexts | None = Field(None, description="extra sentences only the teachers labelled")


class Evaluation(BaseModel):
    """Figures ``python -m export.evaluate --record`` measured on the exported graph after export, on the recorded
    validation split: a generator's Fréchet distance and class fidelity, an autoencoder's AUROC against another
    dataset (what training alone cannot measure)."""

    model_config = ConfigDict(extra="forbid")

    figures: dict[str, float] = Field(description="the report's numbers, a nested one's keys joined with '.'")
    against: dict[str, str] = Field(default_factory=dict, description="what else it read, by name (and graph hash)")
    measured: str = Field(description="when, ISO 8601")


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


def softmax(logits: np.ndarray, temperature: float | np.ndarray = 1.0) -> np.ndarray:
    """(N, K) logits -> softmax(logits / temperature) in float64: a calibrated classifier's served probabilities
    (``temperature``: one, or one per row as an (N, 1) array)."""
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


FLAGGED_POWER_MAX = 16.0
FLAGGED_RATIO_MAX = 1e3  # a flagged answer's score over the threshold, as far as its temperature follows it


def flagged_ratio(score: float | None, threshold: float) -> float:
    """How far a flagged answer's score lies beyond the threshold, as its temperature follows it: score /
    threshold taken between 1 and FLAGGED_RATIO_MAX; NaN or +inf: FLAGGED_RATIO_MAX; no score, -inf or a
    threshold of 0 or less: 1."""
    if score is None or threshold <= 0 or score == -math.inf:
        return 1.0
    if math.isnan(score) or score == math.inf:
        return FLAGGED_RATIO_MAX
    return min(max(score / threshold, 1.0), FLAGGED_RATIO_MAX)


def nothing_written(field: np.ndarray) -> bool:
    """Did the front door find nothing in an image (its prepared field (C, H, W), raw or normalised, is one value
    in each channel: a blank page, uniform paper)? Such an answer is flagged out of distribution and served at 1/K
    for every label. Per channel: a colour model normalises each with its own mean and std, so a white page is
    three values (a helper's audit: a colour model's blank page was answered 'cercle rond' at 29 %, unflagged)."""
    channels = field.reshape(field.shape[0], -1) if field.ndim == 3 else field.reshape(1, -1)
    return bool((channels.max(axis=1) == channels.min(axis=1)).all())


class Calibration(BaseModel):
    """Classifiers: served probabilities are softmax(logits / temperature) (temperature scaling, Guo et al.
    2017), a photo of a sheet the front door cut out of a table at its own (``table_temperature``), an answer
    flagged out of distribution at a higher one (``flagged_power``, export/flagged.py), fitted on validation half
    A (export/calibrate.py); ECE (15 bins) and accuracy on half B."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(gt=0)
    table_temperature: float | None = Field(
        None,
        gt=0,
        description="an image classifier's photo of a sheet that the front door cut out of a table around it is "
        "read at this temperature instead (fitted on half A's unflagged photos of sheets on tables; None: at "
        "temperature like any other)",
    )
    flagged_power: float = Field(
        0.0,
        ge=0,
        le=FLAGGED_POWER_MAX,
        description="an image classifier's answer flagged out of distribution is read at temperature "
        "T * (score / threshold) ** flagged_power, T its temperature or table_temperature (fitted on half A's "
        "flagged answers; 0: at T like any other)",
    )
    fitted_on: str
    ece_before: dict[str, float] = Field(description="measured set -> expected calibration error at T = 1")
    ece_after: dict[str, float] = Field(
        description="measured set -> expected calibration error of the served probabilities of each image's first "
        "reading (at T, or table_temperature for a sheet cut out of a table; a flagged answer higher, flagged_power)"
    )
    accuracy: dict[str, float] = Field(default_factory=dict, description="measured set -> accuracy")
    ece_floor: dict[str, float] = Field(
        default_factory=dict,
        description="measured set -> the median ECE of a perfectly calibrated model with the served confidences "
        "on as many inputs (each right with its confidence's probability): what sampling noise alone scores",
    )


class OutOfDistribution(BaseModel):
    """Classifiers: how an input unlike the training data is told (export/calibrate.py)."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field(
        pattern=r"^(unknown-token-share(\+word-rarity)?|(mahalanobis|energy|nearest_centre|reconstruction|sibling)"
        r"(\+(mahalanobis|energy|nearest_centre|reconstruction|sibling)){0,4})$",
        description="'mahalanobis': distance of the penultimate features to the nearest class mean (a graph "
        "output); 'energy': minus the log-sum-exp of the logits; 'nearest_centre' (RBF networks): squared distance "
        "of the input to the nearest centre; 'reconstruction': squared error of a served autoencoder of the same "
        "images (its graph folded in); 'sibling': the out-of-distribution score of a calibrated classifier of the "
        "same images (its graph folded in); components joined by '+': the largest of them, each scaled by ``scaling``; "
        "'unknown-token-share': share of the text's tokens outside the vocabulary; 'word-rarity': the "
        "mean log frequency rank of the text's tokens, shrunk towards the typical token's for short texts "
        "(contract/text_ood.py)",
    )
    output: str | None = Field(None, description="the graph output holding the score, if the graph computes it")
    scaling: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="per component of a combined score, (centre, unit): the graph scores it as (s - centre) / unit",
    )
    threshold: float = Field(description="scores above it are flagged out_of_distribution")
    fitted_on: str
    figures: dict[str, float] = Field(default_factory=dict, description="AUROC and flag rates on validation half B")
    second_reading: bool = Field(
        False,
        description="image classifiers of pen strokes: a photo this model flags is read again at the other polarity "
        "and answered from that reading when the model finds it typical (contract.images.second_reading_kept); set "
        "by export/second_reading.py where that mends more of its half-A photos than it breaks",
    )

    def beyond(self, score: float | None) -> bool:
        """Is ``score`` past the threshold? A NaN score (an input of extreme values) is: no evidence of fit."""
        return score is not None and not score <= self.threshold


class GraphInfo(BaseModel):
    """A second graph shipped beside model.onnx (a VAE's encoder)."""

    model_config = ConfigDict(extra="forbid")
    file: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class GibbsInfo(BaseModel):
    """Gibbs samplers (an RBM): model.onnx runs up to ``steps_per_run`` Gibbs steps with the noise as inputs, in
    order (v (B, D), u_h (B, K, H), u_v (B, K, D), steps (B,)) -> (v (B, D), image (B, C, H, W), hidden (B, H));
    contract/gibbs.py draws a chain from a seed."""

    model_config = ConfigDict(extra="forbid")
    steps_per_run: int = Field(ge=1, description="K: steps one run of the graph takes at most")
    visible: int = Field(ge=1, description="D: visible units (the pixels)")
    hidden: int = Field(ge=1, description="H: hidden units; 'hidden' = p(h | v) of the input v, its features")
    start: Literal["bernoulli-0.5"] = Field("bernoulli-0.5", description="each chain's first visible state")


class GeneratorInfo(BaseModel):
    """Generators: how to drive model.onnx (latent z [+ labels] -> images, or a Gibbs chain's runs)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["gan", "vae", "rbm"]
    latent_dim: int = Field(description="z's size; an RBM's hidden units")
    conditional: bool = Field(description="the graph takes an int64 'labels' input; labels lists the classes")
    noise: Literal["standard-normal", "uniform"] = Field(
        "standard-normal",
        description="z ~ N(0, I), or (Gibbs samplers) U[0, 1) noise inputs; the service draws it with numpy's "
        "default_rng from the request's seed",
    )
    value_range: tuple[float, float] = Field((0.0, 1.0), description="pixel range of the output images")
    encoder: GraphInfo | None = Field(None, description="VAE: image [+ labels] -> posterior mu, logvar")
    gibbs: GibbsInfo | None = Field(None, description="Gibbs samplers: the chain model.onnx runs (no z)")


MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # what a request may name (/v1 bodies and paths)
VERSION_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


class ModelMetadata(BaseModel):
    """``model.json``: everything needed to serve, describe and audit one exported model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    schema_version: int = SCHEMA_VERSION
    name: str = Field(pattern=MODEL_NAME, description="the name requests use: letters, digits, '.', '_', '-'")
    version: str = Field(pattern=VERSION_PATTERN)
    task: str = Field(
        pattern=r"^[a-z][a-z0-9-]{0,63}$",
        description="what the model does, as the service serves it: image-classification, text-classification, "
        "autoencoder, generator, recall, or another task a module of service/tasks/ registers",
    )
    architecture: str = Field(description="registry name of the nn.Module")
    architecture_config: dict[str, ConfigValue]
    parameters: int | None = Field(
        None, description="the nn.Module's parameters, learnt or fixed (None: exported before nnserve recorded them)"
    )
    labels: list[str]
    preprocessing: ImagePreprocessing | TextPreprocessing
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int
    training: dict[str, TrainingValue] = Field(
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
    distillation: Distillation | None = None
    evaluation: Evaluation | None = None

    def image_preprocessing(self) -> ImagePreprocessing:
        if not isinstance(self.preprocessing, ImagePreprocessing):
            raise TypeError(f"{self.name} is a {self.task} model, not an image model")
        return self.preprocessing

    def text_preprocessing(self) -> TextPreprocessing:
        if not isinstance(self.preprocessing, TextPreprocessing):
            raise TypeError(f"{self.name} is a {self.task} model, not a text model")
        return self.preprocessing

    def probabilities(
        self,
        logits: np.ndarray,
        answers: Sequence[tuple[float | None, bool]] | None = None,
        fields: Iterable[np.ndarray] | None = None,
        on_table: Sequence[bool] | np.ndarray | None = None,
    ) -> np.ndarray:
        """A classifier's (N, K) logits -> its served probabilities: softmax(logits / T), T the calibrated
        temperature (1 without calibration), or for a row whose sheet the front door cut out of a table
        (``on_table``, ``Reading.on_table``) the table temperature where the model has one; with ``answers`` (each
        row's ``ood_answer``), a flagged row's T grows with its score beyond the threshold
        (``Calibration.flagged_power``); with ``fields`` (each row's prepared field), a row whose field holds
        nothing (``nothing_written``) is 1/K for every label: the input carries no evidence for any of them,
        whatever the graph makes of an empty field."""
        probs = softmax(logits, self.temperatures(len(logits), answers, on_table))
        if fields is not None:
            probs[[nothing_written(f) for f in fields]] = 1.0 / probs.shape[1]
        return probs

    def temperatures(
        self,
        n: int,
        answers: Sequence[tuple[float | None, bool]] | None = None,
        on_table: Sequence[bool] | np.ndarray | None = None,
    ) -> np.ndarray:
        """The (n, 1) temperatures ``probabilities`` reads n rows at: T (the table temperature for a row
        ``on_table``, where the model has one), and for a flagged row that times
        flagged_ratio(score, threshold) ** flagged_power."""
        cal, ood = self.calibration, self.ood
        t = np.full((n, 1), cal.temperature if cal else 1.0)
        if cal is not None and cal.table_temperature is not None and on_table is not None:
            t[np.asarray(on_table, dtype=bool)] = cal.table_temperature
        if cal is None or not cal.flagged_power or ood is None or ood.threshold <= 0 or answers is None:
            return t
        for i, (score, flagged) in enumerate(answers):
            if flagged:
                t[i] *= flagged_ratio(score, ood.threshold) ** cal.flagged_power
        return t

    def ood_answer(self, score: float | None, oddness: float | None, pixels: np.ndarray) -> tuple[float | None, bool]:
        """An image classifier's out-of-distribution answer for one image (``pixels``: its prepared field, raw or
        normalised): the graph's ``score``, raised for a photo to the front door's ``oddness`` in the score's units
        (oddness 1 maps to the threshold); flagged when the score is above the threshold, or, calibrated or not,
        when the front door found nothing written (the field is one value: a blank page, uniform paper) or a page
        unlike any of the model's kind (oddness above 1: a scene, printed text)."""
        ood = self.ood
        if ood is not None and score is not None and oddness is not None and ood.threshold > 0:
            score = max(score, oddness * ood.threshold)
        odd = oddness is not None and oddness > 1
        return score, (ood is not None and ood.beyond(score)) or odd or nothing_written(pixels)

    def anomaly_answer(self, error: float, oddness: float | None, pixels: np.ndarray) -> bool:
        """An autoencoder's anomaly flag for one image (``pixels``: its prepared field): the reconstruction
        ``error`` is above the threshold, or the front door found nothing written (a blank page is reconstructed
        almost perfectly) or a page unlike any of the model's kind (oddness above 1), as ``ood_answer`` says."""
        assert self.anomaly is not None
        return error > self.anomaly.threshold or (oddness is not None and oddness > 1) or nothing_written(pixels)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_metadata(model_dir: str | Path) -> ModelMetadata:
    return ModelMetadata.model_validate_json(Path(model_dir, METADATA_FILE).read_bytes())
