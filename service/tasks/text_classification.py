"""Text classification (sentiment): texts in JSON (/v1/sentiment) -> calibrated labels, with the share of words
outside the vocabulary as the out-of-distribution score; on /v2, the texts as a BYTES tensor (nnserve tokenises
them with the artifact's vocabulary, which a client has no way to obtain). Its family, TextModels, runs text
classifiers: right-padded int64 ids (B, T) + lengths (B,) -> logits (B, K)."""

from __future__ import annotations

from typing import Annotated

import bentoml
import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from contract.metadata import ModelMetadata
from contract.text import encode_text, pad_right
from service.engine import Engine, current, flag, softmax
from service.errors import ApiError
from service.family import (
    SERVICE_CONFIG,
    Family,
    InferResult,
    Int64,
    group_by_model,
    in_input_order,
    length_buckets,
)
from service.metrics import PREDICTIONS, TOKENS, child
from service.oip_schemas import TensorMetadata
from service.oip_tensors import classifier_outputs, with_ood
from service.registry import Adapter, Task, Tensors, register
from service.schemas import ANSWERED_BY, ERROR_RESPONSES, MODEL_NAME, OOD_FLAG, OOD_SCORE, VERSION, json_response
from service.settings import get_settings

S = get_settings()
TASK = "text-classification"


class TextItem(BaseModel):
    """One text row: which model, and its token ids (T,) (unpadded)."""

    model: str
    ids: Int64


class AnalyzeSentimentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field("sst2-lstm", pattern=MODEL_NAME, description="a served text-classification model")
    texts: list[Annotated[str, Field(max_length=S.max_text_chars)]] = Field(
        min_length=1,
        max_length=S.max_texts,
        description=f"1-{S.max_texts} texts of at most {S.max_text_chars:,} characters each",
    )


class SentimentPrediction(BaseModel):
    label: str = Field(description="the most probable class")
    score: float = Field(ge=0, le=1, description="calibrated probability of the predicted label")
    probs: dict[str, float] = Field(description="calibrated probability of every label")
    tokens: int = Field(ge=1, description="tokens in the text (the model's tokenizer)")
    tokens_read: int = Field(ge=1, description="tokens the model read: all of them, or its first max_len")
    truncated: bool = Field(description="the text had more than the model's max_len tokens: tokens_read < tokens")
    ood_score: float | None = OOD_SCORE
    out_of_distribution: bool = OOD_FLAG


class AnalyzeSentimentResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description=ANSWERED_BY)
    version: str = Field(description=VERSION)
    predictions: list[SentimentPrediction] = Field(description="one per input text, in input order")


@bentoml.service(name="nnserve-text-models", **SERVICE_CONFIG)
class TextModels(Family):
    """Text classifiers: right-padded int64 ids (B, T) + lengths (B,) -> logits (B, K).

    The recurrent models are padding-invariant (models/rnn.py), so a text's logits do not depend on the
    bucket it is padded into or on the other texts of its batch.
    """

    task = TASK

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=S.text_max_batch_size, max_latency_ms=S.max_latency_ms)
    def infer(self, items: list[TextItem]) -> list[InferResult]:
        chunks = []
        for name, rows in group_by_model([it.model for it in items]).items():
            for bucket in length_buckets([len(items[i].ids) for i in rows]):
                idx = [rows[j] for j in bucket]
                ids, lens = pad_right([items[i].ids for i in idx])
                chunks.append((idx, [InferResult(logits=row) for row in self.models[name].run(ids, lens)]))
        return in_input_order(len(items), chunks)


def text_rows(engine: Engine, model: str, texts: list[str]) -> tuple[list[TextItem], list[tuple[int, int, float]]]:
    """Texts -> the model's token-id rows (tokenised exactly as in training), with each text's token count,
    how many of them the row keeps, and the share of those outside the vocabulary; the limits on texts and
    characters are checked here."""
    meta = engine.metadata(model, TASK)
    pre = meta.text_preprocessing()
    if len(texts) > S.max_texts:
        raise ApiError("invalid_request", f"at most {S.max_texts} texts per request")
    items, encoded = [], []
    for i, text in enumerate(texts):
        if len(text) > S.max_text_chars:
            raise ApiError("invalid_request", f"texts[{i}] is over {S.max_text_chars} characters", [{"index": i}])
        if not text.strip():
            raise ApiError("invalid_request", f"texts[{i}] is empty", [{"index": i}])
        ids, n_tokens, _ = encode_text(text, pre.tokenizer, engine.vocabs[model])
        if not ids:
            raise ApiError("invalid_request", f"texts[{i}] has no words or symbols", [{"index": i}])
        TOKENS.labels(model).observe(n_tokens)
        items.append(TextItem(model=model, ids=np.asarray(ids, dtype=np.int64)))
        encoded.append((n_tokens, len(ids), sum(i == pre.unk_id for i in ids) / len(ids)))
    return items, encoded


router = APIRouter()


@router.post("/sentiment", response_model=AnalyzeSentimentResponse, responses=ERROR_RESPONSES)
async def sentiment(request: AnalyzeSentimentRequest) -> Response:
    """Sentiment of 1 to NNSERVE_MAX_TEXTS texts (64 by default); texts over the model's max_len tokens
    are truncated and say so."""
    engine, model = current(), request.model
    meta = engine.metadata(model, TASK)
    items, encoded = text_rows(engine, model, request.texts)
    probs = softmax(np.stack([r.logits for r in await engine.call(TASK, items, model)]), meta)
    predictions = []
    for p, (n_tokens, n_read, unknown) in zip(probs, encoded, strict=True):
        score = unknown if meta.ood is not None else None
        best = int(p.argmax())
        child(PREDICTIONS, model, meta.labels[best]).inc()
        predictions.append(
            SentimentPrediction(
                label=meta.labels[best],
                score=float(p[best]),
                probs={lbl: float(v) for lbl, v in zip(meta.labels, p, strict=True)},
                tokens=n_tokens,
                tokens_read=n_read,
                truncated=n_read < n_tokens,
                ood_score=score,
                out_of_distribution=flag(meta, score),
            )
        )
    return json_response(AnalyzeSentimentResponse(model=model, version=meta.version, predictions=predictions))


def _v2_inputs(meta: ModelMetadata) -> list[TensorMetadata]:
    return [TensorMetadata(name="text", datatype="BYTES", shape=[-1])]


def _utf8(b: bytes, i: int) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("invalid_request", f"text[{i}] is not valid UTF-8") from None


async def _v2_sentiment(engine: Engine, meta: ModelMetadata, t: Tensors) -> Tensors:
    texts = [_utf8(b, i) for i, b in enumerate(t["text"])]
    items, encoded = text_rows(engine, meta.name, texts)
    results = await engine.call(TASK, items, meta.name)
    return with_ood(meta, np.stack([r.logits for r in results]), [unknown for _, _, unknown in encoded])


register(
    Task(
        name=TASK,
        family=TextModels,
        methods=("infer",),
        max_batch=lambda s: s.text_max_batch_size,
        max_rows=lambda s: s.max_texts,
        router=router,
        v2=Adapter(_v2_inputs, classifier_outputs, _v2_sentiment, classifies=True),
    )
)
