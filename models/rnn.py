"""Recurrent text classifiers: embedding -> (Bi)LSTM / GRU / RNN -> masked pooling -> linear.

Pooling is max, mean, last, or attention: additive attention (Bahdanau et al. 2015; as a pooling layer for
classification, Yang et al. 2016) scores each position with v·tanh(W h_t + b), a softmax over the real
positions gives weights summing to 1, and their weighted sum of the states is classified. ``explain`` returns
those weights with the logits, so the service can show which tokens the answer rests on.

Padding never changes the result. Sequences are right-padded, so a forward recurrence reaches every real
token before any pad. The backward direction is run on each sequence reversed *within its own length*
(pads stay at the end), so it too sees only real tokens before pads; its outputs are then un-reversed
the same way. Pooling reads real positions only. A text therefore gets the same logits whether it is
padded to 20 or to 200 tokens, alone or in any batch.

    ids     a  b  c  P  P        reverse within length     c  b  a  P  P
    fwd ─► h1 h2 h3  .  .        bwd ─►                    g3 g2 g1 .  .
    concat [h1|g1] [h2|g2] [h3|g3] ─► masked max/mean over 3 real positions ─► linear
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.registry import register_model

FAMILY = "text-classification"
CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
POOLINGS = ("max", "mean", "last", "attention")


@dataclass(frozen=True)
class RNNClassifierConfig:
    vocab_size: int = 20_000
    num_classes: int = 2
    cell: str = "lstm"  # lstm | gru | rnn (tanh)
    embed_dim: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.3  # on embeddings, between layers and before the head
    pooling: str = "max"  # max | mean | last | attention
    attention_dim: int = 64  # attention pooling: the width of its scoring layer
    pad_id: int = 0


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> each row's first ``length`` steps reversed, the padded tail left in place."""
    b, t, d = x.shape
    steps = torch.arange(t, device=x.device).unsqueeze(0)  # (1, T)
    lens = lengths.unsqueeze(1)  # (B, 1)
    idx = torch.where(steps < lens, lens - 1 - steps, steps)  # (B, T)
    rows = idx + torch.arange(b, device=x.device).unsqueeze(1) * t  # (B, T) positions in the flat B*T axis
    return x.reshape(b * t, d).index_select(0, rows.reshape(-1)).reshape(b, t, d)


class RNNClassifier(nn.Module):
    def __init__(self, cfg: RNNClassifierConfig) -> None:
        super().__init__()
        if cfg.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}")
        if cfg.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.pad_id)
        self.drop = nn.Dropout(cfg.dropout)
        cell = CELLS[cfg.cell]
        out_dim = cfg.hidden_size * (2 if cfg.bidirectional else 1)
        # one unidirectional module per layer and direction, so the backward one can be fed the
        # within-length reversal (a stock bidirectional module would read the pads first)
        self.fwd = nn.ModuleList()
        self.bwd = nn.ModuleList()
        for layer in range(cfg.num_layers):
            d_in = cfg.embed_dim if layer == 0 else out_dim
            self.fwd.append(cell(d_in, cfg.hidden_size, batch_first=True))
            if cfg.bidirectional:
                self.bwd.append(cell(d_in, cfg.hidden_size, batch_first=True))
        self.head = nn.Linear(out_dim, cfg.num_classes)
        if cfg.pooling == "attention":
            self.att_proj = nn.Linear(out_dim, cfg.attention_dim)
            self.att_score = nn.Linear(cfg.attention_dim, 1, bias=False)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # (B, T), (B,) -> (B, K)
        return self.explain(ids, lengths)[0]

    def explain(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> logits (B, K) and attention weights (B, T): zero on pads, summing to 1 over each row's real
        tokens (for the other poolings, the weights are uniform: they say nothing about the tokens)."""
        lengths = lengths.clamp(min=1)
        mask = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
        h = self.drop(self.embed(ids))  # (B, T, E)
        for layer, fwd in enumerate(self.fwd):
            if layer > 0:
                h = self.drop(h)
            out_f, _ = fwd(h)  # (B, T, H)
            if self.cfg.bidirectional:
                out_b, _ = self.bwd[layer](reverse_within_length(h, lengths))
                h = torch.cat([out_f, reverse_within_length(out_b, lengths)], dim=2)  # (B, T, 2H)
            else:
                h = out_f
        weights = mask.to(h.dtype) / lengths.unsqueeze(1).to(h.dtype)  # (B, T)
        if self.cfg.pooling == "attention":
            scores = self.att_score(torch.tanh(self.att_proj(h))).squeeze(2)  # (B, T)
            weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=1)
            pooled = (h * weights.unsqueeze(2)).sum(1)
        elif self.cfg.pooling == "max":
            pooled = h.masked_fill(~mask.unsqueeze(2), float("-inf")).amax(dim=1)  # (B, D)
        elif self.cfg.pooling == "mean":
            pooled = (h * mask.unsqueeze(2)).sum(1) / lengths.unsqueeze(1).to(h.dtype)
        else:  # forward state at the last real token, backward state at the first
            b, t, d = h.shape
            last = (lengths - 1) + torch.arange(b, device=h.device) * t  # (B,) flat positions
            pooled = h.reshape(b * t, d).index_select(0, last)  # (B, D)
            if self.cfg.bidirectional:
                half = self.cfg.hidden_size
                pooled = torch.cat([pooled[:, :half], h[:, 0, half:]], dim=1)
        return self.head(self.drop(pooled)), weights


@register_model("rnn-classifier", family=FAMILY, config=RNNClassifierConfig)
def rnn_classifier(cfg: RNNClassifierConfig) -> nn.Module:
    """Embedding -> (Bi)LSTM/GRU/RNN layers -> padding-invariant pooling (max, mean, last, attention) -> linear."""
    return RNNClassifier(cfg)
