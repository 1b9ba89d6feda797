"""Sample quality of generators, measured with a shipped classifier (onnxruntime only, no torch).

Fréchet distance (Heusel et al. 2017, "FID"): fit a Gaussian to the features of real images and one to the
features of generated images, and report

    FD = ‖μ_r - μ_g‖² + Tr(Σ_r + Σ_g - 2 (Σ_r Σ_g)^½).

FID proper uses Inception-v3 pool features of ImageNet-scale images; for 28x28 grey digits and garments we
use the penultimate layer (the input of the final linear layer) of our own classifier of the same dataset
(mnist-cnn for MNIST, fashion-cnn for Fashion-MNIST). The figures are therefore comparable with each other,
not with published FIDs. FD is biased upward for small samples, so every comparison here uses the same
number of images on both sides, and the floor is the distance between two disjoint real sets of that size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from contract.images import normalize
from contract.metadata import ONNX_FILE, ModelMetadata


def feature_session(classifier_dir: Path) -> tuple[ort.InferenceSession, str]:
    """The classifier's graph with its penultimate activations added as an output -> (session, output name).

    The features are the input of the node that produces ``logits`` (a Gemm, or the MatMul under an Add).
    """
    model = onnx.load(str(classifier_dir / ONNX_FILE))
    producers = {out: node for node in model.graph.node for out in node.output}
    node = producers["logits"]
    if node.op_type == "Add":
        node = next(producers[i] for i in node.input if i in producers and producers[i].op_type == "MatMul")
    if node.op_type not in ("Gemm", "MatMul"):
        raise ValueError(f"{classifier_dir}: logits come from a {node.op_type} node, not a linear layer")
    name = node.input[0]
    model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]), name


def classifier_outputs(
    classifier_dir: Path, meta: ModelMetadata, *pixel_sets: np.ndarray, batch: int = 500
) -> list[tuple[np.ndarray, np.ndarray]]:
    """uint8 image sets (N, C, H, W) at the classifier's input size -> per set (features (N, d), predicted
    labels (N,)), all through one session."""
    sess, feat_name = feature_session(classifier_dir)
    pre = meta.image_preprocessing()
    out = []
    for pixels in pixel_sets:
        feats, preds = [], []
        for i in range(0, len(pixels), batch):
            feed = {meta.inputs[0].name: normalize(pixels[i : i + batch], pre)}
            logits, f = sess.run(["logits", feat_name], feed)
            feats.append(f.reshape(len(f), -1).astype(np.float64))
            preds.append(logits.argmax(1))
        out.append((np.concatenate(feats), np.concatenate(preds)))
    return out


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """FD between Gaussians fitted to two feature sets (N, d). Tr((Σ1 Σ2)^½) is computed as the trace of
    (Σ1^½ Σ2 Σ1^½)^½, which has the same eigenvalues and is symmetric, so it stays real and stable."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    c1, c2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    s1 = _sqrtm_psd(c1)
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(s1 @ c2 @ s1), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * tr_sqrt)
