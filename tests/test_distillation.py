"""Distillation of the classifiers, text and image (training/distillation.py): teachers are the shipped artifacts
run by onnxruntime, refused when they may have seen the student's validation rows; their answers become targets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from contract.data import load_idx_dataset, stratified_split
from contract.metadata import load_metadata, sha256_file, softmax
from contract.text import UNK_ID, TokenizerConfig, tokenize
from contract.text_data import load_table, text_validation
from export.__main__ import main as export_main
from training import distillation
from training.__main__ import main as train_main
from training.distillation import distillation_loss
from training.text_classification import substituted

ROOT = Path(__file__).resolve().parents[1]
ART = ROOT / "artifacts"
DATA = ROOT.parent / "shared" / "data" / "sentiment"
MNIST = ROOT.parent / "shared" / "data" / "mnist"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"the shared sentiment data is not at {DATA}")
needs_mnist = pytest.mark.skipif(not MNIST.is_dir(), reason=f"the shared MNIST data is not at {MNIST}")


def test_the_shipped_default_and_its_teachers_are_the_artifacts_here_built_on_one_set_of_word_vectors():
    """The default's card names its teachers by their graphs: those graphs are the shipped ones, and every one of
    them started from the same word vectors as the student (a rebuild of the vectors rebuilds them all)."""
    student = load_metadata(ART / "sst2-gru-distilled")
    assert student.distillation is not None and len(student.distillation.teachers) == 4
    vectors = {student.training["vectors_sha256"]}
    for t in student.distillation.teachers:
        assert sha256_file(ART / t.model / "model.onnx") == t.onnx_sha256, t.model
        vectors.add(load_metadata(ART / t.model).training["vectors_sha256"])
    assert len(vectors) == 1


def test_review_sentences_are_distinct_bounded_and_free_of_markup():
    tok = TokenizerConfig(max_len=12)
    reviews = [
        "A fine film. A fine film. It was far too long for me.<br /><br />Still, I liked the cast a lot!",
        "Bad. Simply the worst thing I have seen this year, and I have seen many films of every kind.",
        "Who knew? The ending surprised everyone in the theatre that night.",
    ]
    got = distillation.review_sentences(reviews, 50, np.random.default_rng(0), tok)
    assert len(got) == len(set(got)) == 4  # "A fine film." once; "Bad." and the 18-token one are out of bounds
    assert all(4 <= len(tokenize(s, tok)) <= 12 and "<br" not in s for s in got)
    assert distillation.review_sentences(reviews, 2, np.random.default_rng(0), tok)[:2] != []
    assert len(distillation.review_sentences(reviews, 2, np.random.default_rng(0), tok)) == 2


def test_teacher_probabilities_are_the_served_graphs():
    teacher = distillation.TextTeacher(ART / "sst2-gru", temperature=1.0)
    texts = ["A gorgeous, witty, seductive movie.", "A dull, lifeless mess.", "", "ok"]
    pre = teacher.meta.text_preprocessing()
    rows = [teacher.vocab.encode(tokenize(t, pre.tokenizer)) or [UNK_ID] for t in texts]  # one at a time, unpadded
    feeds = [{"ids": np.array([r], dtype=np.int64), "lengths": np.array([len(r)], dtype=np.int64)} for r in rows]
    logits = np.concatenate([teacher.session.run(["logits"], f)[0] for f in feeds])
    p = teacher.probs(texts)
    assert p.shape == (4, 2) and np.allclose(p, softmax(logits), atol=1e-6)
    assert p[0].argmax() == teacher.meta.labels.index("positive")
    assert p[1].argmax() == teacher.meta.labels.index("negative")
    soft = distillation.TextTeacher(ART / "sst2-gru", temperature=3.0).probs(["a gorgeous , witty , seductive movie ."])
    assert 0.5 < soft[0].max() < p[0].max()  # a higher temperature softens, never flips


@needs_data
def test_a_teacher_that_may_have_seen_validation_rows_is_refused():
    ds = load_table(DATA / "sst2" / "train.tsv", name="sst2")
    teacher = distillation.TextTeacher(ART / "sst2-gru", temperature=2.0)
    distillation.check_teacher(teacher, ds, "sentences", 0.1, 0)  # the split it was trained on
    for split, fraction, seed in [("sentences", 0.1, 1), ("sentences", 0.2, 0), ("random", 0.1, 0)]:
        with pytest.raises(ValueError, match="another split"):
            distillation.check_teacher(teacher, ds, split, fraction, seed)
    imdb = distillation.TextTeacher(ART / "imdb-lstm", temperature=2.0)  # another data file altogether
    with pytest.raises(ValueError, match="another split"):
        distillation.check_teacher(imdb, ds, "sentences", 0.1, 0)
    with pytest.raises(ValueError, match="must be a text-classification model"):
        distillation.TextTeacher(ART / "mnist-cnn", temperature=2.0)


def _altered_teacher(tmp_path: Path, change, model: str = "sst2-gru") -> distillation.TextTeacher:
    """``model`` with its model.json altered by ``change`` (the graph and vocabulary linked, not copied)."""
    folder = tmp_path / "teacher"
    folder.mkdir(parents=True)
    for f in (ART / model).iterdir():
        if f.name != "model.json":
            (folder / f.name).symlink_to(f)
    meta = json.loads((ART / model / "model.json").read_text())
    change(meta)
    (folder / "model.json").write_text(json.dumps(meta))
    return distillation.TextTeacher(folder, temperature=2.0)


@needs_data
def test_a_teacher_of_another_file_or_other_labels_is_refused(tmp_path):
    ds = load_table(DATA / "sst2" / "train.tsv", name="sst2")
    other_file = _altered_teacher(tmp_path / "a", lambda m: m["dataset"]["sha256"].update({"train.tsv": "0" * 64}))
    with pytest.raises(ValueError, match="another split"):  # same split settings, another file
        distillation.check_teacher(other_file, ds, "sentences", 0.1, 0)
    other_labels = _altered_teacher(tmp_path / "b", lambda m: m.update(labels=["bad", "good"]))
    with pytest.raises(ValueError, match="answers"):
        distillation.check_teacher(other_labels, ds, "sentences", 0.1, 0)


@needs_data
def test_a_teacher_of_another_corpus_is_taken_when_its_file_holds_no_validation_text(tmp_path):
    ds = load_table(DATA / "sst2" / "train.tsv", name="sst2")
    texts, _ = text_validation(load_metadata(ART / "sst2-gru"), DATA / "sst2" / "train.tsv")
    imdb = distillation.TextTeacher(ART / "imdb-lstm", temperature=2.0)
    distillation.check_teacher(imdb, ds, "sentences", 0.1, 0, texts)  # IMDB's reviews: another site's
    found = imdb.record()["other_corpus"]
    assert found["file"] == "train.csv" and found["sha256"] == imdb.meta.dataset.sha256["train.csv"]
    assert 0 < found["short_validation_texts_found"] <= 10  # "i like it .", "big mistake ." and the like
    longest = max(texts, key=len)
    assert len(tokenize(longest, imdb.tok)) >= distillation.OTHER_CORPUS_TOKENS

    def corpus(rows: list[str]) -> distillation.TextTeacher:
        """imdb-lstm recorded as trained on a small CSV of ``rows``."""
        folder = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
        data = folder / "imdb" / "train.csv"  # read as IMDB's file is (contract.text_data.preset_for)
        data.parent.mkdir(parents=True)
        data.write_text("label,text\n" + "".join(f'{i % 2},"{r}"\n' for i, r in enumerate(rows)))
        recorded = {"source": str(data), "sha256": {"train.csv": sha256_file(data)}}
        return _altered_teacher(folder, lambda m: m["dataset"].update(recorded), model="imdb-lstm")

    spaced = longest.upper().replace(" ", "  ")  # another spacing and case: the same tokens
    held = corpus(["A review that quotes a critic: " + spaced + " And goes on.", "Another review."])
    with pytest.raises(ValueError, match="holds validation texts"):
        distillation.check_teacher(held, ds, "sentences", 0.1, 0, texts)
    clean = corpus(["Nothing from SST-2 here at all, only this.", "Another review."])
    distillation.check_teacher(clean, ds, "sentences", 0.1, 0, texts)
    assert clean.record()["other_corpus"]["short_validation_texts_found"] == 0
    (Path(clean.meta.dataset.source)).write_text('label,text\n0,"changed"\n')
    with pytest.raises(ValueError, match="not here as it was recorded"):  # the file is not what it trained on
        distillation.check_teacher(clean, ds, "sentences", 0.1, 0, texts)


def test_teachers_average_by_their_shares():
    class Fixed:
        def __init__(self, p: list[float], share: float) -> None:
            self.p, self.share = np.array([p]), share

        def probs(self, _inputs: object) -> np.ndarray:
            return self.p

    got = distillation.ensemble_probs([Fixed([0.9, 0.1], 1.0), Fixed([0.1, 0.9], 3.0)], None)
    assert np.allclose(got, [[0.3, 0.7]])
    assert np.allclose(distillation.ensemble_probs([Fixed([0.9, 0.1], 1.0), Fixed([0.1, 0.9], 1.0)], None), 0.5)


@needs_data
def test_teacher_shares_are_one_positive_share_per_teacher_and_recorded(tmp_path):
    argv = ["rnn-classifier", "--data", str(DATA / "sst2" / "train.tsv"), "--dry-run", "--no-progress"]
    argv += ["--teacher", str(ART / "sst2-gru"), "--teacher", str(ART / "sst2-lstm-max")]
    for bad in ("1", "1,0", "1,2,3"):
        with pytest.raises(SystemExit, match="one positive share per teacher"):
            train_main([*argv, "--teacher-shares", bad, "--out", str(tmp_path / "x")])
    assert train_main([*argv, "--teacher-shares", "1,3", "--out", str(tmp_path)]) == 0
    record = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["distillation"]
    assert [t.get("share", 1.0) for t in record["teachers"]] == [1.0, 3.0]
    assert export_main([str(tmp_path / "checkpoint.pt"), "--out", str(tmp_path / "student"), "--dry-run"]) == 0
    meta = load_metadata(tmp_path / "student")
    assert meta.distillation is not None and [t.share for t in meta.distillation.teachers] == [1.0, 3.0]
    assert meta.training["teacher_shares"] == [1.0, 3.0]


def test_substitution_replaces_words_only_and_about_as_often_as_asked():
    ids = torch.randint(2, 1000, (200, 50))
    ids[:, 40:] = 0  # padding
    ids[:, 0] = UNK_ID
    gen = torch.Generator().manual_seed(0)
    out = substituted(ids, 0.1, 1000, gen)
    assert torch.equal(out[:, 40:], ids[:, 40:]) and torch.equal(out[:, 0], ids[:, 0])
    changed = (out != ids).float().mean().item() * 50 / 39  # of the words, not the padding or <unk>
    assert 0.08 < changed < 0.11  # (a draw of the word it replaces changes nothing)
    assert int(out[:, 1:40].min()) > UNK_ID and int(out.max()) < 1000
    assert torch.equal(substituted(ids, 0.0, 1000, gen), ids)


def test_distillation_loss_is_hintons():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.5, -0.5]])
    hard = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # the third row is unlabelled
    soft = torch.tensor([[0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    w, t = 0.25, 3.0
    loss, correct = distillation_loss(w, t)(logits, torch.cat([hard, soft], 1))
    ce = torch.nn.functional.cross_entropy(logits[:2], torch.tensor([0, 1]), reduction="sum")
    kl = torch.nn.functional.kl_div((logits / t).log_softmax(1), soft, reduction="sum")
    assert torch.isclose(loss, ((1 - w) * ce + w * t**2 * kl) / 3)
    assert correct == 2  # rows 1-2 against their labels, row 3 against the teachers' top class (1)
    only_hard, _ = distillation_loss(0.0, t)(logits[:2], torch.cat([hard, soft], 1)[:2])
    assert torch.isclose(only_hard, ce / 2)


@needs_data
def test_distilled_dry_run_records_its_teachers_and_sentences(tmp_path):
    argv = ["rnn-classifier", "--data", str(DATA / "sst2" / "train.tsv"), "--dry-run", "--no-progress"]
    argv += ["--teacher", str(ART / "sst2-gru"), "--teacher", str(ART / "sst2-lstm-max")]
    argv += ["--unlabelled", str(DATA / "imdb" / "unsup.csv.gz"), "--unlabelled-rows", "1000"]
    assert train_main([*argv, "--out", str(tmp_path)]) == 0
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    record = ckpt["distillation"]
    assert [t["model"] for t in record["teachers"]] == ["sst2-gru", "sst2-lstm-max"]
    shipped = json.loads((ART / "sst2-gru" / "model.json").read_text())["onnx_sha256"]
    assert record["teachers"][0]["onnx_sha256"] == shipped
    assert record["unlabelled"]["sentences"] == 64  # a dry run: one batch of them
    assert record["teachers_agree_with_labels"] > 0.8
    assert export_main([str(tmp_path / "checkpoint.pt"), "--out", str(tmp_path / "student"), "--dry-run"]) == 0
    meta = load_metadata(tmp_path / "student")  # the artifact names its teachers by their graphs' hashes
    assert meta.distillation is not None and meta.distillation.teachers[0].onnx_sha256 == shipped
    assert meta.distillation.unlabelled is not None and meta.distillation.unlabelled.sentences == 64
    with pytest.raises(SystemExit, match="need --teacher"):
        train_main(["rnn-classifier", "--data", "synthetic", "--dry-run", "--unlabelled", "x.csv.gz", "--out", "x"])


@needs_mnist
def test_an_image_teacher_reads_augmented_batches_as_the_service_reads_digits():
    ds = load_idx_dataset(MNIST, "mnist")
    _, val = stratified_split(ds.labels, 0.1, 0)
    pixels, labels = ds.images[val[:300]], ds.labels[val[:300]]
    teacher = distillation.ImageTeacher(ART / "mnist-cnn", temperature=1.0)
    probs = teacher.probs(pixels.astype(np.float32))  # a training batch holds floats in 0..255
    assert probs.shape == (300, 10) and np.allclose(probs.sum(1), 1.0)
    assert (probs.argmax(1) == labels).mean() >= 0.97
    assert np.allclose(probs, teacher.probs(pixels), atol=1e-6)  # uint8 or float: the same answers
    hot = distillation.ImageTeacher(ART / "mnist-cnn", temperature=4.0).probs(pixels)
    assert (hot.max(1) < probs.max(1) + 1e-9).all() and hot.max(1).mean() < 0.9  # T > 1 softens every answer
    with pytest.raises(ValueError, match="must be a image-classification model"):
        distillation.ImageTeacher(ART / "sst2-gru", temperature=2.0)


@needs_mnist
def test_a_distilled_image_dry_run_records_its_teacher_and_refuses_another_datasets(tmp_path):
    argv = ["lenet5", "--data", str(MNIST), "--dry-run", "--no-progress", "--distill-temperature", "3"]
    assert train_main([*argv, "--teacher", str(ART / "mnist-cnn"), "--out", str(tmp_path)]) == 0
    record = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["distillation"]
    shipped = json.loads((ART / "mnist-cnn" / "model.json").read_text())["onnx_sha256"]
    assert record["teachers"] == [{"model": "mnist-cnn", "onnx_sha256": shipped}]
    assert record["temperature"] == 3.0 and record["teachers_agree_with_labels"] > 0.8
    assert export_main([str(tmp_path / "checkpoint.pt"), "--out", str(tmp_path / "student"), "--dry-run"]) == 0
    meta = load_metadata(tmp_path / "student")
    assert meta.distillation is not None and meta.distillation.teachers[0].onnx_sha256 == shipped
    with pytest.raises(SystemExit, match="another split"):  # Fashion-MNIST's files: it never saw these digits
        train_main([*argv, "--teacher", str(ART / "fashion-cnn"), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match=r"do not read --teacher$"):  # not a classifier: refused, not ignored
        train_main(["autoencoder", "--data", str(MNIST), "--dry-run", "--teacher", str(ART / "mnist-cnn")])
