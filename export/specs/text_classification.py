"""Export of text classifiers: right-padded int64 ids (B, T) + lengths (B,) -> logits (B, K), with the vocabulary
written beside the graph (vocab.json) and parity checked over sequence lengths too. A model with attention
pooling also outputs its weights, attention (B, T), which the service returns as explanations."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch

from contract.metadata import TensorSpec, TextPreprocessing
from contract.text import TEXT_IDS, TEXT_LENGTHS, VOCAB_FILE, TokenizerConfig, Vocab
from export.spec import MAX_BATCH, MAX_SEQ, PARITY_BATCHES, ExportSpec, register_spec, token_inputs

PARITY_SEQ_LENS = (7, 64)
ATTENTION = "attention"


class Explainer(torch.nn.Module):
    """The classifier's ``explain``: logits and the attention weights it pooled with."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.explain(ids, lengths)  # type: ignore[operator]


@register_spec("text-classification")
def text_spec(ckpt: dict[str, Any]) -> ExportSpec:
    vocab = Vocab(ckpt["vocab"])
    vocab_bytes = (json.dumps(vocab.itos, ensure_ascii=False) + "\n").encode("utf-8")
    pre = TextPreprocessing(
        tokenizer=TokenizerConfig.model_validate(ckpt["tokenizer"]),
        vocab_sha256=hashlib.sha256(vocab_bytes).hexdigest(),
        vocab_size=len(vocab),
    )
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    seq = torch.export.Dim("seq", min=1, max=MAX_SEQ)
    ids, lengths = token_inputs(len(vocab), 2, 16)
    cases: list[tuple[np.ndarray, ...]] = [
        token_inputs(len(vocab), b, t, seed=b * 100 + t) for b in PARITY_BATCHES for t in PARITY_SEQ_LENS
    ]
    outputs = [TensorSpec(name="logits", dtype="float32", shape=[-1, len(ckpt["labels"])])]
    attends = ckpt["model_config"].get("pooling") == ATTENTION
    if attends:
        outputs.append(TensorSpec(name=ATTENTION, dtype="float32", shape=[-1, -1]))
    return ExportSpec(
        example=(torch.from_numpy(ids), torch.from_numpy(lengths)),
        inputs=[
            TensorSpec(name=TEXT_IDS, dtype="int64", shape=[-1, -1]),
            TensorSpec(name=TEXT_LENGTHS, dtype="int64", shape=[-1]),
        ],
        dynamic_shapes={TEXT_IDS: {0: batch, 1: seq}, TEXT_LENGTHS: {0: batch}},
        parity_cases=cases,
        preprocessing=pre,
        outputs=outputs,
        seq_lens=list(PARITY_SEQ_LENS),
        files={VOCAB_FILE: vocab_bytes},
        wrap=Explainer if attends else None,
        extras=lambda _: {"training": vectors_record(ckpt)},
    )


def vectors_record(ckpt: dict[str, Any]) -> dict[str, str]:
    """Which word vectors the embedding started from, by the sha256 of their file (training.word_vectors), so that
    the card names them without the checkpoint; nothing for a random start."""
    source = ckpt.get("embedding", {}).get("source")
    return {} if source is None else {"vectors_sha256": source["sha256"]}
