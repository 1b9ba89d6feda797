"""Text classification (sentiment): texts in JSON (/v1/sentiment) -> calibrated labels, with an out-of-distribution
score from the words read (unknown and rare words: contract/text_ood.py); on /v2, the texts as a BYTES tensor
(nnserve tokenises them with the artifact's vocabulary, which a client has no way to obtain). Its family,
TextModels, runs text classifiers: right-padded int64 ids (B, T) + lengths (B,) -> logits (B, K), and for
attention models their weights (B, T), which ``"explain": true`` returns per token with its place in the text.

A text longer than the model's max_len tokens is read in consecutive windows (one row each), and its logits are
the windows' mean weighted by their token counts; only beyond NNSERVE_TEXT_WINDOWS windows is it cut, and the
answer says how many tokens were read."""

from __future__ import annotations

from typing import Annotated

import bentoml
import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.responses import Response

from contract.metadata import ModelMetadata
from contract.reasons import NO_KNOWN_WORD, OodReason
from contract.text import combine_windows, encode_windows, pad_right, tokenize_spans
from contract.text_ood import text_ids, text_ood_answer
from service.engine import Engine, check_abandoned, current, flagged, off_loop
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
from service.oip_tensors import OOD_OUTPUTS, classifier_outputs, with_ood
from service.registry import Adapter, Task, Tensors, register
from service.runtime import served_key
from service.schemas import (
    ANSWERED_BY,
    ERROR_RESPONSES,
    MODEL_NAME,
    OOD_FLAG,
    OOD_REASON,
    OOD_SCORE,
    VERSION,
    VersionChoice,
    json_response,
)
from service.settings import get_settings

S = get_settings()
TASK = "text-classification"


ATTENTION = "attention"  # the output of attention-pooling graphs (export/specs/text_classification.py)
INLINE_TEXT_CHARS = 2_000  # at most ~0.6 ms of English (20 ms at worst) is tokenised on the event loop


class TextItem(BaseModel):
    """One row: which model, and the token ids (T,) (unpadded) of a text or of one window of it."""

    model: str
    ids: Int64


class TextRows(BaseModel):
    """A text's rows (its windows, in order) and what the answer reports about it."""

    start: int  # its first row among the request's rows
    sizes: list[int]  # tokens per window
    tokens: int
    ood_score: float | None  # how unlike the training texts the tokens read are (contract/text_ood.py)
    words: bool = True  # a word the model knows is read (contract.text.Vocab.words): without one, no evidence
    ood_reason: OodReason | None = None  # why it is flagged (contract/reasons.py), None where it is not

    @property
    def read(self) -> int:
        return sum(self.sizes)


class AnalyzeSentimentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field("sst2-gru-distilled", pattern=MODEL_NAME, description="a served text-classification model")
    version: VersionChoice = None
    texts: list[Annotated[str, Field(max_length=S.max_text_chars)]] = Field(
        min_length=1,
        max_length=S.max_texts,
        description=f"1-{S.max_texts} texts of at most {S.max_text_chars:,} characters each",
    )
    explain: StrictBool = Field(
        False,
        description="return each text's tokens with the model's attention weights and their places in the text "
        "(models with attention pooling; others answer 400)",
    )


class TokenWeight(BaseModel):
    token: str = Field(description="the token as the model read it (lowercased, PTB-split)")
    weight: float = Field(ge=0, le=1, description="its attention weight; a text's weights sum to 1")
    start: int | None = Field(
        description="where the token starts in the text, in code points (Python's str index; a JavaScript client "
        "cuts Array.from(text), not text, whose UTF-16 units count an emoji twice), or null"
    )
    end: int | None = Field(description="where it ends (exclusive): text[start:end] is what it was made of")


class SentimentPrediction(BaseModel):
    label: str = Field(
        description="the most probable class (the first label where all are equally probable: a text flagged as "
        "carrying no evidence)"
    )
    score: float = Field(ge=0, le=1, description="calibrated probability of the predicted label")
    probs: dict[str, float] = Field(description="calibrated probability of every label")
    tokens: int = Field(ge=1, description="tokens in the text (the model's tokenizer)")
    tokens_read: int = Field(ge=1, description="tokens the model read: all, or the first NNSERVE_TEXT_WINDOWS windows")
    windows: int = Field(ge=1, description="windows of the model's max_len tokens read (their logits are combined)")
    truncated: bool = Field(description="the text was longer than the windows read: tokens_read < tokens")
    explanation: list[TokenWeight] | None = Field(
        None,
        description="with explain: the tokens read, in order, with their attention weights; empty for a text "
        "without a word of meaning (punctuation, function words: answered 1/K and flagged)",
    )
    ood_score: float | None = OOD_SCORE
    out_of_distribution: bool = OOD_FLAG
    ood_reason: OodReason | None = OOD_REASON


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
            model = self.models[name]
            att = model.output_index(ATTENTION)
            for bucket in length_buckets([len(items[i].ids) for i in rows]):
                idx = [rows[j] for j in bucket]
                ids, lens = pad_right([items[i].ids for i in idx])
                outs = model.run_all(ids, lens)
                results = [
                    InferResult(logits=row, attention=None if att is None else outs[att][k, : lens[k]])
                    for k, row in enumerate(outs[0])
                ]
                chunks.append((idx, results))
        return in_input_order(len(items), chunks)


def text_rows(
    engine: Engine, model: str | ModelMetadata, texts: list[str], empty_ok: bool = False
) -> tuple[list[TextItem], list[TextRows]]:
    """Texts -> the model's token-id rows (tokenised exactly as in training; a long text in windows of max_len
    tokens), with what each text's answer reports; the limits on texts and characters are checked here. A text
    without tokens is a 400, or with ``empty_ok`` (/v2, whose batch has no per-row errors) one unknown token:
    like any text without a word the model knows it is answered 1/K for every label and flagged (``no_words``)."""
    meta = model if isinstance(model, ModelMetadata) else engine.metadata(model, TASK)  # a version resolved already
    pre = meta.text_preprocessing()
    if len(texts) > S.max_texts:
        raise ApiError("invalid_request", f"at most {S.max_texts} texts per request")
    items: list[TextItem] = []
    encoded = []
    key = served_key(meta)
    vocab = engine.vocabs[key]
    for i, text in enumerate(texts):
        check_abandoned()  # in the decode pool: a request gone stops here
        if len(text) > S.max_text_chars:
            field = "text" if empty_ok else "texts"  # /v2's input, /v1's field
            raise ApiError("invalid_request", f"{field}[{i}] is over {S.max_text_chars} characters", [{"index": i}])
        if not text.strip() and not empty_ok:
            raise ApiError("invalid_request", f"texts[{i}] is empty", [{"index": i}])
        windows, n_tokens, evidence = encode_windows(text, pre.tokenizer, vocab, S.text_windows)
        worded = len(evidence) > 0  # a word, known or not (emoji and stars alone are none; an empty /v2 text)
        if not windows and empty_ok:
            windows, evidence = [[pre.unk_id]], np.asarray([pre.unk_id])
        elif not windows:
            raise ApiError("invalid_request", f"texts[{i}] has no words or symbols", [{"index": i}])
        TOKENS.labels(meta.name).observe(n_tokens)
        sizes = [len(w) for w in windows]
        ids = text_ids(windows)
        score, reason = (None, None) if meta.ood is None else text_ood_answer(evidence, len(vocab), meta.ood)
        words = bool(vocab.words[ids].any())
        if not words:  # no word of meaning: flagged, for its unknown or rare words where they flag it too (German
            # function words alone, a helper's review: "words the model does not know" is what to change)
            reason = reason if worded and reason else NO_KNOWN_WORD
        encoded.append(
            TextRows(start=len(items), sizes=sizes, tokens=n_tokens, ood_score=score, words=words, ood_reason=reason)
        )
        items += [TextItem(model=key, ids=np.asarray(w, dtype=np.int64)) for w in windows]
    return items, encoded


async def tokenized(
    engine: Engine, model: str | ModelMetadata, texts: list[str], empty_ok: bool = False
) -> tuple[list[TextItem], list[TextRows]]:
    """``text_rows`` on the event loop for short texts, in the decode pool for long ones: tokenising cost
    0.3 us per character of English here but 10 us for a character that normalisation expands 18-fold, and a
    request may carry 640,000 characters."""
    if sum(map(len, texts)) <= INLINE_TEXT_CHARS:
        return text_rows(engine, model, texts, empty_ok)
    return await off_loop(text_rows, engine, model, texts, empty_ok)


def no_words(encoded: list[TextRows]) -> list[bool]:
    """Which texts hold no word the model knows (unknown words, punctuation and function words only: "xqzv",
    "...", "it is"): they carry no evidence, and are answered 1/K for every label and flagged."""
    return [not e.words for e in encoded]


def combined_logits(results: list[InferResult], encoded: list[TextRows]) -> np.ndarray:
    """One row of logits per text: its windows' combined."""
    return combine_windows(np.stack([r.logits for r in results]), [e.sizes for e in encoded])


def explanations(
    texts: list[str], meta: ModelMetadata, encoded: list[TextRows], results: list[InferResult]
) -> list[list[TokenWeight]]:
    """Per text, the tokens read with their weights: each window's attention (summing to 1) scaled by the
    window's share of the tokens read, the share its logits have in the combination, so a text's weights sum to
    1. A text answered without the graph (``no_words``) has no weights: its explanation is empty. Run in the
    decode pool: finding the places of 10,000 characters of tokens took 17 ms here."""
    out: list[list[TokenWeight]] = []
    for text, rows in zip(texts, encoded, strict=True):
        check_abandoned()
        if not rows.words:
            out.append([])
            continue
        weights = np.concatenate(
            [results[rows.start + w].attention * (size / rows.read) for w, size in enumerate(rows.sizes)]  # type: ignore[operator]
        )
        spans = tokenize_spans(text, meta.text_preprocessing().tokenizer)[: rows.read]
        out.append(
            [TokenWeight(token=t, weight=float(x), start=a, end=b) for (t, a, b), x in zip(spans, weights, strict=True)]
        )
    return out


router = APIRouter()


@router.post("/sentiment", response_model=AnalyzeSentimentResponse, responses=ERROR_RESPONSES)
async def sentiment(request: AnalyzeSentimentRequest) -> Response:
    """Sentiment of 1 to NNSERVE_MAX_TEXTS texts (64 by default). A text over the model's max_len tokens is read
    in windows and their answers combined; one over NNSERVE_TEXT_WINDOWS windows is cut and says so. With
    ``explain``, an attention model's weight for every token read."""
    engine = current()
    meta = engine.metadata(engine.requested_by(request, TASK), TASK)
    if request.explain and not any(o.name == ATTENTION for o in meta.outputs):
        pooling = meta.architecture_config.get("pooling", "its own")
        raise ApiError(
            "invalid_request",
            f"{meta.name} pools its states by {pooling}, not by attention: it has no weights to explain with; "
            "choose a model with attention (GET /v1/models)",
        )
    if request.explain and sum(map(len, request.texts)) > S.max_explain_chars:
        raise ApiError("invalid_request", f"explain reads at most {S.max_explain_chars} characters per request")
    items, encoded = await tokenized(engine, meta, request.texts)  # this version, whatever a swap does meanwhile
    results = await engine.call(TASK, items, meta.name)
    probs = meta.probabilities(combined_logits(results, encoded))
    empty = no_words(encoded)
    probs[empty] = 1.0 / probs.shape[1]  # no word it knows: as a blank page, 1/K each
    explained = await off_loop(explanations, request.texts, meta, encoded, results) if request.explain else None
    predictions = []
    for i, (p, rows) in enumerate(zip(probs, encoded, strict=True)):
        best = int(p.argmax())
        child(PREDICTIONS, meta.name, meta.labels[best]).inc()
        predictions.append(
            SentimentPrediction(
                label=meta.labels[best],
                score=float(p[best]),
                probs={lbl: float(v) for lbl, v in zip(meta.labels, p, strict=True)},
                tokens=rows.tokens,
                tokens_read=rows.read,
                windows=len(rows.sizes),
                truncated=rows.read < rows.tokens,
                explanation=None if explained is None else explained[i],
                ood_score=rows.ood_score,
                out_of_distribution=flagged(meta, rows.ood_reason),
                ood_reason=rows.ood_reason,
            )
        )
    return json_response(AnalyzeSentimentResponse(model=meta.name, version=meta.version, predictions=predictions))


COUNTS = ("tokens", "tokens_read")  # /v2 outputs on request: /v1's count of each text's tokens and of those read


def _v2_inputs(meta: ModelMetadata) -> list[TensorMetadata]:
    return [TensorMetadata(name="text", datatype="BYTES", shape=[-1])]


def _v2_outputs(meta: ModelMetadata) -> list[TensorMetadata]:
    """The classifier's outputs, and /v1's count of each text's tokens and of those read (on request)."""
    counts = [TensorMetadata(name=n, datatype="INT64", shape=[-1]) for n in COUNTS]
    return classifier_outputs(meta) + counts


def _utf8(b: bytes, i: int) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("invalid_request", f"text[{i}] is not valid UTF-8") from None


async def _v2_sentiment(engine: Engine, meta: ModelMetadata, t: Tensors) -> Tensors:
    texts = [_utf8(b, i) for i, b in enumerate(t["text"])]
    items, encoded = await tokenized(engine, meta, texts, empty_ok=True)
    results = await engine.call(TASK, items, meta.name)
    scores, reasons = [e.ood_score for e in encoded], [e.ood_reason for e in encoded]
    out = with_ood(meta, combined_logits(results, encoded), scores, reasons, no_words(encoded))
    out["tokens"] = np.asarray([e.tokens for e in encoded], dtype=np.int64)
    # an empty text is read as one unknown token: none of its 0 tokens
    out["tokens_read"] = np.asarray([min(e.read, e.tokens) for e in encoded], dtype=np.int64)
    return out


register(
    Task(
        name=TASK,
        family=TextModels,
        methods=("infer",),
        max_batch=lambda s: s.text_max_batch_size,
        max_rows=lambda s: s.max_texts,
        router=router,
        v2=Adapter(_v2_inputs, _v2_outputs, _v2_sentiment, classifies=True, on_request=OOD_OUTPUTS + COUNTS),
    )
)
