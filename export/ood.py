"""An image classifier's out-of-distribution score (export/calibrate.py fits it): its components (the
Mahalanobis distance of the penultimate features to the nearest class mean, the energy of the logits, for an
RBF network the distance of the input to its nearest centre, with a served autoencoder of the same images its
reconstruction error, and with a calibrated sibling classifier of the same images that one's own score), their
scaling, which of them to serve, and the score folded into model.onnx as the
extra output ``ood_score``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, compose, helper, numpy_helper

from contract.images import normalize
from contract.metadata import ONNX_FILE, ModelMetadata, TensorSpec, load_metadata, sha256_file
from export.frechet import feature_session

OOD_OUTPUT = "ood_score"
CLEAN_FLAG = 0.03  # at most this share of clean in-distribution half-A inputs flagged
PHOTO_FLAG = 0.06  # and of photographed ones
COMPONENT_FLAGS = (0.05, 0.10)  # the same for each component's own unit (clean, photographed)
# dear components (mnist-ae: 2.8 M multiply-adds per image, 0.4-1.0 ms more per run on one thread, bench.graph_ab;
# a sibling: its whole graph), served only where they flag at least this much more of the other dataset than the
# best set without them
COSTLY = frozenset({"reconstruction", "sibling"})
COSTLY_GAIN = 0.005
# an RBF network's centres in its graph: models/mlp.py's RBFNetwork.centres, (M, D) with D the input's size
CENTRES = "centres"
AE_PREFIX = "ood_ae_"  # an autoencoder's nodes and constants, folded into the classifier's graph
SIBLING_PREFIX = "ood_sib_"  # a sibling classifier's, the same


def fit_mahalanobis(feats: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Class means (K, d) and L (d, d) with L L^T = the shared covariance's inverse (shrunk towards the
    identity by 1e-3 of its mean variance, for a stable inverse; by at least 1e-6, for features that do not vary
    within a class, as a user's folder of identical images gives)."""
    means = np.stack([feats[labels == c].mean(0) for c in range(k)])
    centred = feats - means[labels]
    cov = centred.T @ centred / len(feats)
    cov += np.eye(len(cov)) * max(1e-3 * np.trace(cov) / len(cov), 1e-6)
    return means, np.linalg.cholesky(np.linalg.inv(cov))


def logits_and_features(
    sess: ort.InferenceSession, feat: str | None, meta: ModelMetadata, pixels: np.ndarray, batch: int = 500
) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits and (with ``feat``, a graph output) penultimate features of prepared uint8 images, in batches."""
    pre = meta.image_preprocessing()
    logits, feats = [], []
    for i in range(0, len(pixels), batch):
        feed = {meta.inputs[0].name: normalize(pixels[i : i + batch], pre)}
        lg, *f = sess.run(["logits", *([feat] if feat else [])], feed)
        logits.append(lg)
        feats += [x.reshape(len(x), -1).astype(np.float64) for x in f]
    return np.concatenate(logits), np.concatenate(feats) if feats else None


def scoring_session(model_dir: Path) -> tuple[ort.InferenceSession, str | None]:
    """The graph without an earlier calibration's score, with its penultimate features as an output: (session,
    the features' name), or (the plain graph's session, None) where the logits come from no linear layer (then
    there are no features, and the energy is the score)."""
    strip_ood_output(model_dir)
    try:
        return feature_session(model_dir)
    except ValueError:
        return ort.InferenceSession(str(model_dir / ONNX_FILE), providers=["CPUExecutionProvider"]), None


def took_ood_output(
    model_dir: Path, meta: ModelMetadata, pixels: np.ndarray, logits: np.ndarray
) -> ort.InferenceSession:
    """After ``add_ood_output``: ``meta`` names the new output and the rewritten graph's sha256, and the rewritten
    graph must still give ``logits`` (the graph's before) on ``pixels``, within export's parity tolerance.
    Returns the rewritten graph's session."""
    meta.outputs = [
        *[o for o in meta.outputs if o.name != OOD_OUTPUT],
        TensorSpec(name=OOD_OUTPUT, dtype="float32", shape=[-1]),
    ]
    meta.onnx_sha256 = sha256_file(model_dir / ONNX_FILE)
    sess = ort.InferenceSession(str(model_dir / ONNX_FILE), providers=["CPUExecutionProvider"])
    now = logits_and_features(sess, None, meta, pixels)[0]
    np.testing.assert_allclose(now, logits, rtol=meta.parity.rtol, atol=meta.parity.atol)
    return sess


def energy_score(logits: np.ndarray, t: float) -> np.ndarray:
    """-T logsumexp(logits / T) (Liu et al. 2020): higher for inputs unlike the training data."""
    z = logits.astype(np.float64) / t
    top = z.max(1, keepdims=True)
    return -t * (np.log(np.exp(z - top).sum(1)) + top[:, 0])


def graph_centres(model_dir: Path) -> np.ndarray | None:
    """The centres of an RBF network's graph (the initializer CENTRES, one row per centre, as long as the
    flattened input), or None for any other graph."""
    model = onnx.load(str(model_dir / ONNX_FILE))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    for init in model.graph.initializer:
        if init.name == CENTRES and len(init.dims) == 2 and init.dims[1] == int(np.prod(dims)):
            return numpy_helper.to_array(init).astype(np.float64)
    return None


def centre_distances(inputs: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(N, M): the squared distance of each (normalised) input to each centre."""
    x = inputs.reshape(len(inputs), -1).astype(np.float64)
    return (x * x).sum(1)[:, None] - 2 * x @ centres.T + (centres * centres).sum(1)[None]


def nearest_centre(inputs: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The squared distance of each (normalised) input to the nearest centre: an RBF network's own novelty
    measure (Bishop 1994, "Novelty detection and neural network validation": no centre near, no evidence)."""
    return centre_distances(inputs, centres).min(1)


def distance_tensor(model_dir: Path, centres: np.ndarray, inputs: np.ndarray) -> str:
    """The name of the tensor in which an RBF network's graph holds the squared distances of its input to its
    centres (N, M), found by value on ``inputs`` (normalised) rather than by the name an exporter gave it: of
    the graph's float tensors shaped like that, the last one equal to ``centre_distances``."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(model_dir / ONNX_FILE)))
    g = model.graph
    m = len(centres)
    names = [
        v.name
        for v in g.value_info
        if v.type.tensor_type.elem_type == TensorProto.FLOAT
        and len(v.type.tensor_type.shape.dim) == 2
        and v.type.tensor_type.shape.dim[1].dim_value == m
    ]
    g.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = sess.run(names, {g.input[0].name: inputs.astype(np.float32)})
    want = centre_distances(inputs, centres)
    found = [
        n
        for n, v in zip(names, values, strict=True)
        if v.shape == want.shape and np.allclose(v, want, rtol=1e-4, atol=1e-3 * want.mean())
    ]
    if not found:
        raise ValueError(f"{model_dir}: no tensor of the graph holds the squared distances to its centres")
    return found[-1]


def reconstruction_error(autoencoder: Path, pixels: np.ndarray, batch: int = 500) -> np.ndarray:
    """The squared error with which a served autoencoder (its artifact folder) reconstructs uint8 images
    (N, C, H, W), each normalised as the autoencoder's own metadata says: high where the images are unlike its
    training data (Japkowicz et al. 1995; Sakurada & Yairi 2014)."""
    out = [
        ((r.astype(np.float64) - x) ** 2).reshape(len(x), -1).sum(1)
        for x, r in _in_batches(autoencoder, pixels, "reconstruction", batch)
    ]
    return np.concatenate(out)


def _in_batches(folder: Path, pixels: np.ndarray, output: str, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """A served artifact's graph over uint8 images (N, C, H, W) in batches, each normalised as its own metadata
    says: (the batch as fed, ``output`` for it)."""
    meta = load_metadata(folder)
    sess = ort.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
    for i in range(0, len(pixels), batch):
        x = normalize(pixels[i : i + batch], meta.image_preprocessing())
        yield x, sess.run([output], {meta.inputs[0].name: x})[0]


def input_feed(classifier: Path, other: Path) -> tuple[float, float]:
    """(scale, shift) turning the classifier's normalised input into another model's (a served autoencoder's or a
    sibling classifier's): both read the same pixels (size, channels and fit must agree, else ValueError), each
    standardised with its own single mean and std."""
    pc, pa = load_metadata(classifier).image_preprocessing(), load_metadata(other).image_preprocessing()
    same = ("input_size", "channels", "fit", "white_on_black")
    if any(getattr(pc, f) != getattr(pa, f) for f in same) or len(pc.mean) != 1 or len(pa.mean) != 1:
        raise ValueError(f"{other} does not read {classifier}'s images as it does ({', '.join(same)})")
    return pc.std[0] / pa.std[0], (pc.mean[0] - pa.mean[0]) / pa.std[0]


def _folded(
    model_dir: Path, other: Path, graph_input: str, prefix: str, tag: str
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """``other``'s graph, its names prefixed, fed from the classifier's input rescaled to its own (``input_feed``;
    constants ood_{tag}_scale and _shift): the nodes, constants and the name of its rescaled input."""
    g = compose.add_prefix(onnx.load(str(other / ONNX_FILE)), prefix).graph
    scale, shift = input_feed(model_dir, other)
    other_in = g.input[0].name
    init = [
        numpy_helper.from_array(np.array(scale, dtype=np.float32), f"ood_{tag}_scale"),
        numpy_helper.from_array(np.array(shift, dtype=np.float32), f"ood_{tag}_shift"),
        *g.initializer,
    ]
    nodes = [
        helper.make_node("Mul", [graph_input, f"ood_{tag}_scale"], [f"ood_{tag}_scaled"]),
        helper.make_node("Add", [f"ood_{tag}_scaled", f"ood_{tag}_shift"], [other_in]),
        *g.node,
    ]
    return nodes, init, other_in


def _reconstruction_nodes(
    model_dir: Path, autoencoder: Path, graph_input: str
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The autoencoder's graph (names prefixed AE_PREFIX) fed from the classifier's input, and ood_reconstruction
    (B,) = || its reconstruction - its input ||^2."""
    nodes, init, ae_in = _folded(model_dir, autoencoder, graph_input, AE_PREFIX, "recon")
    nodes += [
        helper.make_node("Sub", [AE_PREFIX + "reconstruction", ae_in], ["ood_recon_diff"]),
        helper.make_node("Flatten", ["ood_recon_diff"], ["ood_recon_flat"], axis=1),  # (B, C*H*W)
        helper.make_node("ReduceSumSquare", ["ood_recon_flat", "ood_axis1"], ["ood_reconstruction"], keepdims=0),
    ]
    return nodes, init


def sibling_score(sibling: Path, pixels: np.ndarray, batch: int = 500) -> np.ndarray:
    """A calibrated sibling classifier's own out-of-distribution score (its graph's OOD_OUTPUT) of uint8 images
    (N, C, H, W), each normalised as its metadata says."""
    ood = load_metadata(sibling).ood
    if ood is None or ood.output != OOD_OUTPUT:
        raise ValueError(f"{sibling} has no out-of-distribution score to lend: calibrate it first")
    return np.concatenate([s for _, s in _in_batches(sibling, pixels, OOD_OUTPUT, batch)]).astype(np.float64)


def mahalanobis(feats: np.ndarray, means: np.ndarray, chol: np.ndarray) -> np.ndarray:
    d = (feats[:, None, :] - means[None]) @ chol  # (N, K, d)
    return (d**2).sum(-1).min(1)


def threshold_of(clean: np.ndarray, photos: np.ndarray, clean_flag: float, photo_flag: float) -> float:
    """The lowest score above which at most ``clean_flag`` of ``clean`` and ``photo_flag`` of ``photos`` lie."""
    return float(max(np.quantile(clean, 1 - clean_flag), np.quantile(photos, 1 - photo_flag)))


def scaling_of(clean: np.ndarray, photos: np.ndarray) -> tuple[float, float]:
    """(centre, unit) of one component: its median on clean inputs maps to 0, its own threshold to 1."""
    centre = float(np.median(clean))
    return centre, max(threshold_of(clean, photos, *COMPONENT_FLAGS) - centre, 1e-6)


def combined_score(components: dict[str, np.ndarray], scaling: dict[str, tuple[float, float]]) -> np.ndarray:
    """The served ood_score: the largest scaled component."""
    return np.max([(components[k] - c) / u for k, (c, u) in scaling.items()], axis=0)


def choose_components(
    comps: dict[str, dict[str, np.ndarray]],
) -> tuple[dict[str, tuple[float, float]], float, dict[str, float]]:
    """Which components to serve: of every non-empty set of them, the one that flags the most of the other
    dataset's half A at the operating point (at most CLEAN_FLAG of clean and PHOTO_FLAG of photographed half-A
    images flagged), Neyman and Pearson's criterion: the most detections at a fixed false-alarm rate; a set with
    a COSTLY component only if it flags COSTLY_GAIN more than the best set without one. ``comps``: set name ->
    component name -> scores. Returns the scaling, its threshold and each candidate's detections."""
    names = list(comps["A clean"])
    candidates = [list(c) for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]
    best: dict[bool, tuple[dict[str, tuple[float, float]], float, float]] = {}  # costly or not -> the best such
    detected = {}
    for cand in candidates:
        scaling = {c: scaling_of(comps["A clean"][c], comps["A photos"][c]) for c in cand}
        s = {k: combined_score(comps[k], scaling) for k in ("A clean", "A photos", "A other dataset")}
        threshold = threshold_of(s["A clean"], s["A photos"], CLEAN_FLAG, PHOTO_FLAG)
        detected["+".join(cand)] = rate = float((s["A other dataset"] > threshold).mean())
        costly = not COSTLY.isdisjoint(cand)
        if costly not in best or rate > best[costly][2]:
            best[costly] = (scaling, threshold, rate)
    if False not in best or (True in best and best[True][2] >= best[False][2] + COSTLY_GAIN):
        return best[True][0], best[True][1], detected
    return best[False][0], best[False][1], detected


def account(
    scaling: dict[str, tuple[float, float]],
    detected: dict[str, float],
    fit_images: int,
    fit_photos: int,
    autoencoder: Path | None,
    sibling: Path | None = None,
) -> str:
    """model.json's account of the served score (``ood.fitted_on``): what its components were fitted on, how they
    are scaled and combined, and what each candidate set detected (``choose_components``)."""
    parts = []
    if "mahalanobis" in scaling:
        parts.append(
            f"Mahalanobis: class means and shared covariance of penultimate features of {fit_images} training "
            f"images and {fit_photos} photographed ones"
        )
    if autoencoder is not None:
        ae = load_metadata(autoencoder)
        parts.append(f"reconstruction: the squared error of {ae.name} (sha256 {ae.onnx_sha256}), in the graph")
    if sibling is not None:
        sib = load_metadata(sibling)
        parts.append(f"sibling: the out-of-distribution score of {sib.name} (sha256 {sib.onnx_sha256}), in the graph")
    tried = ", ".join(f"{c}: {r:.1%}" for c, r in detected.items())
    parts.append(
        f"each component scaled to 0 at its clean half-A median and 1 at its own threshold "
        f"(<= {COMPONENT_FLAGS[0]:.0%} of clean and <= {COMPONENT_FLAGS[1]:.0%} of photographed half-A images "
        f"above it); the largest is served; threshold: <= {CLEAN_FLAG:.0%} of clean and <= {PHOTO_FLAG:.0%} of "
        f"photographed half-A images flagged; the components chosen flag the most of the other dataset's half A "
        f"there ({tried})"
    )
    return "; ".join(parts)


def strip_ood_output(model_dir: Path) -> bool:
    """Remove an earlier calibration's score from model.onnx (its nodes, constants and output): True if any."""
    path = model_dir / ONNX_FILE
    model = onnx.load(str(path))
    g = model.graph
    if not any(o.name == OOD_OUTPUT for o in g.output):
        return False

    def ours(name: str) -> bool:
        return name == OOD_OUTPUT or name.startswith("ood_")

    nodes = [n for n in g.node if not any(ours(o) for o in n.output)]
    inits = [i for i in g.initializer if not ours(i.name)]
    outputs = [o for o in g.output if not ours(o.name)]
    infos = [v for v in g.value_info if not ours(v.name)]
    for field, kept in ((g.node, nodes), (g.initializer, inits), (g.output, outputs), (g.value_info, infos)):
        del field[:]
        field.extend(kept)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return True


def add_ood_output(
    model_dir: Path,
    feat: str | None,
    means: np.ndarray | None,
    chol: np.ndarray | None,
    scaling: dict[str, tuple[float, float]],
    distances: str | None = None,
    autoencoder: Path | None = None,
    sibling: Path | None = None,
) -> None:
    """Append to model.onnx: ood_score (B,) = max over the components of (score - centre) / unit, where
    mahalanobis = min_k || (features - mean_k) L ||^2, energy = -logsumexp(logits), nearest_centre =
    min_j || input - centre_j ||^2, the smallest of the graph's own squared distances (``distances``, found by
    ``distance_tensor``: nothing is computed twice), reconstruction = ``reconstruction_error`` of ``autoencoder``
    and sibling = ``sibling_score`` of ``sibling``, whose graphs are folded in (the served model stays one file)."""
    path = model_dir / ONNX_FILE
    model = onnx.load(str(path))
    g = model.graph
    if any(o.name == OOD_OUTPUT for o in g.output):
        raise ValueError(f"{path} already has an {OOD_OUTPUT} output: strip it first (strip_ood_output)")
    maha = "mahalanobis" in scaling
    init = [numpy_helper.from_array(np.array([a], dtype=np.int64), f"ood_axis{a}") for a in ((1, 2) if maha else (1,))]
    nodes = [
        helper.make_node("ReduceLogSumExp", ["logits", "ood_axis1"], ["ood_lse"], keepdims=0),  # (B,)
        helper.make_node("Neg", ["ood_lse"], ["ood_energy"]),
    ]
    if maha:
        assert feat is not None and means is not None and chol is not None
        init += [
            numpy_helper.from_array(means.astype(np.float32)[None], "ood_means"),  # (1, K, d)
            numpy_helper.from_array(chol.astype(np.float32), "ood_chol"),  # (d, d)
        ]
        nodes += [
            helper.make_node("Flatten", [feat], ["ood_flat"], axis=1),  # (B, d)
            helper.make_node("Unsqueeze", ["ood_flat", "ood_axis1"], ["ood_f3"]),  # (B, 1, d)
            helper.make_node("Sub", ["ood_f3", "ood_means"], ["ood_centred"]),  # (B, K, d)
            helper.make_node("MatMul", ["ood_centred", "ood_chol"], ["ood_whitened"]),  # (B, K, d)
            helper.make_node("Mul", ["ood_whitened", "ood_whitened"], ["ood_sq"]),
            helper.make_node("ReduceSum", ["ood_sq", "ood_axis2"], ["ood_dist"], keepdims=0),  # (B, K)
            helper.make_node("ReduceMin", ["ood_dist", "ood_axis1"], ["ood_mahalanobis"], keepdims=0),  # (B,)
        ]
    if "nearest_centre" in scaling:
        assert distances is not None
        nodes.append(helper.make_node("ReduceMin", [distances, "ood_axis1"], ["ood_nearest_centre"], keepdims=0))
    if "reconstruction" in scaling:
        assert autoencoder is not None
        ae_nodes, ae_init = _reconstruction_nodes(model_dir, autoencoder, g.input[0].name)
        nodes += ae_nodes
        init += ae_init
    if "sibling" in scaling:
        assert sibling is not None
        sib_nodes, sib_init, _ = _folded(model_dir, sibling, g.input[0].name, SIBLING_PREFIX, "sib")
        nodes += [*sib_nodes, helper.make_node("Identity", [SIBLING_PREFIX + OOD_OUTPUT], ["ood_sibling"])]
        init += sib_init
    for name, (centre, unit) in scaling.items():
        init += [
            numpy_helper.from_array(np.array(centre, dtype=np.float32), f"ood_{name}_centre"),
            numpy_helper.from_array(np.array(unit, dtype=np.float32), f"ood_{name}_unit"),
        ]
        nodes += [
            helper.make_node("Sub", [f"ood_{name}", f"ood_{name}_centre"], [f"ood_{name}_off"]),
            helper.make_node("Div", [f"ood_{name}_off", f"ood_{name}_unit"], [f"ood_{name}_scaled"]),
        ]
    nodes.append(helper.make_node("Max", [f"ood_{name}_scaled" for name in scaling], [OOD_OUTPUT]))
    g.initializer.extend(init)
    g.node.extend(nodes)
    g.output.append(helper.make_tensor_value_info(OOD_OUTPUT, TensorProto.FLOAT, ["batch"]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
