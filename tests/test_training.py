"""Data readers, the deterministic split, augmentation and the training CLI's --dry-run."""

import gzip
import json
import re
import shlex
import struct
import subprocess

import numpy as np
import pytest
import torch

from contract.data import folder_digest, load_idx_dataset, load_image_folder, read_idx, stratified_split
from tests.conftest import REPO, png_bytes
from training.__main__ import main as train_main
from training.augment import PRESETS, random_affine


def _write_idx(path, arr):
    header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_roundtrip_and_dataset(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    labels = np.arange(30) % 10
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), imgs)
    ds = load_idx_dataset(tmp_path, "mnist")
    assert ds.images.shape == (30, 1, 28, 28) and ds.labels.tolist() == labels.tolist()
    assert set(ds.sha256) == {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"}


def test_idx_rejects_truncated_files(tmp_path):
    arr = np.zeros((4, 28, 28), dtype=np.uint8)
    header = struct.pack(">HBB", 0, 8, 3) + struct.pack(">3I", 4, 28, 28)
    (tmp_path / "x.idx").write_bytes(header + arr.tobytes()[:-10])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "x.idx")


def test_stratified_split_is_deterministic_and_disjoint():
    labels = np.repeat(np.arange(10), 50)
    a_tr, a_va = stratified_split(labels, 0.2, seed=1)
    b_tr, b_va = stratified_split(labels, 0.2, seed=1)
    assert np.array_equal(a_va, b_va) and np.array_equal(a_tr, b_tr)
    assert not set(a_tr) & set(a_va) and len(a_tr) + len(a_va) == 500
    assert np.bincount(labels[a_va]).tolist() == [10] * 10
    assert not np.array_equal(stratified_split(labels, 0.2, seed=2)[1], a_va)


def test_a_small_class_holds_one_out_and_is_measured_or_not_stated():
    """A user's folder of 50 images of one class and 4 of another: the small class held none out, and its
    accuracy was stated as 0 % though never measured. It holds one out now; a class of one row trains only,
    and its accuracy is left out of the metrics rather than written as 0."""
    from training.common import classification_metrics

    labels = np.array([0] * 50 + [1] * 4 + [2])
    tr, va = stratified_split(labels, 0.1, seed=0)
    assert np.bincount(labels[va], minlength=3).tolist() == [5, 1, 0] and 54 in tr
    probs = np.eye(3)[labels[va]]
    assert classification_metrics(probs, labels[va], ["a", "b", "c"])["per_class_accuracy"] == {"a": 1.0, "b": 1.0}


def test_image_folder_reader_prepares_like_the_service(tmp_path):
    from contract.metadata import ImagePreprocessing

    for cls, value in (("cat", 40), ("dog", 200)):
        (tmp_path / cls).mkdir()
        for i in range(3):
            (tmp_path / cls / f"{i}.png").write_bytes(png_bytes(np.full((40, 30, 3), value, dtype=np.uint8)))
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    pre = ImagePreprocessing(
        input_size=(16, 16), channels=3, mean=[0, 0, 0], std=[1, 1, 1], white_on_black=False, fit="resize"
    )
    ds = load_image_folder(tmp_path, pre)
    assert ds.label_names == ["cat", "dog"]
    assert ds.images.shape == (6, 3, 16, 16)
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_an_image_folder_leaves_out_what_it_cannot_read_and_needs_two_classes(tmp_path, caplog):
    """A new user's folder: a corrupt PNG and a truncated JPEG aborted training with a traceback, an empty class
    folder became a class never predicted, one class trained a model that always says it."""
    from contract.metadata import ImagePreprocessing

    pre = ImagePreprocessing(input_size=(16, 16), channels=1, mean=[0], std=[1], white_on_black=False, fit="resize")
    for cls in ("circle", "square", "empty"):
        (tmp_path / cls).mkdir()
    for i in range(2):
        (tmp_path / "circle" / f"{i}.png").write_bytes(png_bytes(np.full((20, 20), 40 * i, dtype=np.uint8)))
    (tmp_path / "circle" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "square" / "cut.jpg").write_bytes(png_bytes(np.full((20, 20), 90, dtype=np.uint8), fmt="JPEG")[:200])
    (tmp_path / "square" / "nested").mkdir()
    with pytest.raises(ValueError, match="two or more class sub-folders"):
        load_image_folder(tmp_path, pre)  # square's only image is unreadable, empty holds none: one class
    (tmp_path / "square" / "ok.png").write_bytes(png_bytes(np.full((20, 20), 200, dtype=np.uint8)))
    # WebP, which the service reads, is read; a BMP and a GIF, which it does not, are said to be left out
    (tmp_path / "square" / "ok.webp").write_bytes(png_bytes(np.full((20, 20), 210, dtype=np.uint8), fmt="WEBP"))
    for fmt in ("BMP", "GIF"):
        (tmp_path / "square" / f"x.{fmt.lower()}").write_bytes(png_bytes(np.full((9, 9), 9, dtype=np.uint8), fmt=fmt))
    with caplog.at_level("WARNING"):
        ds = load_image_folder(tmp_path, pre)
    assert ds.label_names == ["circle", "square"] and ds.labels.tolist() == [0, 0, 1, 1]
    assert "2 pictures left out (1 .bmp, 1 .gif): convert them to PNG, JPEG or WebP" in caplog.text
    assert "2 files left out, unreadable: circle/broken.png" in caplog.text and "square/cut.jpg" in caplog.text
    assert "empty: no image it can read" in caplog.text and "nested: a folder inside a class folder" in caplog.text
    with pytest.raises(ValueError, match="not a folder"):
        load_image_folder(tmp_path / "missing", pre)
    # a training audit's: a tool's hidden folder became a class, and a GIF named .png was trained on (the service
    # answers it 415)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "a.png").write_bytes(png_bytes(np.full((20, 20), 9, dtype=np.uint8)))
    (tmp_path / "square" / "gif.png").write_bytes(png_bytes(np.full((9, 9), 9, dtype=np.uint8), fmt="GIF"))
    digest = folder_digest(tmp_path)
    # and a second one's (2026-12-07): a hidden file in a class folder was trained on (a Mac's ._0.png beside 0.png,
    # its metadata, was said to be unreadable)
    (tmp_path / "circle" / ".0.png").write_bytes(png_bytes(np.full((20, 20), 9, dtype=np.uint8)))
    (tmp_path / "circle" / "._0.png").write_bytes(b"\x00\x05\x16\x07 a Mac's metadata")
    caplog.clear()
    with caplog.at_level("WARNING"):
        again = load_image_folder(tmp_path, pre)
    assert again.label_names == ["circle", "square"] and again.labels.tolist() == [0, 0, 1, 1]
    assert ".ipynb_checkpoints: a hidden or tool folder" in caplog.text and "1 GIF as .png" in caplog.text
    assert "2 hidden picture files left out: circle/.0.png, circle/._0.png" in caplog.text
    assert "unreadable: circle/._0" not in caplog.text
    assert folder_digest(tmp_path) == digest == again.sha256["image-folder"] != folder_digest(tmp_path, hidden=True)


def test_augmentation_keeps_shape_and_changes_pixels():
    x = torch.zeros(4, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 255
    g = torch.Generator().manual_seed(0)
    y = random_affine(x, PRESETS["digits"], g)
    assert y.shape == x.shape and not torch.equal(x, y)
    assert torch.equal(random_affine(x, PRESETS["none"], g), x)


@pytest.mark.parametrize("model", ["cnn", "lenet5"])
def test_dry_run_writes_checkpoint_metrics_and_curves(tmp_path, model):
    assert train_main([model, "--dry-run", "--out", str(tmp_path), "--no-progress"]) == 0
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["model_name"] == model and "state_dict" in ckpt
    assert not any(isinstance(v, torch.nn.Module) for v in ckpt.values())
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["metrics"]["accuracy"] <= 1.0
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_result(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert train_main(["lenet5", "--dry-run", "--seed", "5", "--out", str(out), "--no-progress"]) == 0
    sa = torch.load(a / "checkpoint.pt", weights_only=True)["state_dict"]
    sb = torch.load(b / "checkpoint.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_photo_pool_is_the_front_doors_reading_of_rendered_photos_and_is_cached(tmp_path, monkeypatch, digits):
    from contract.metadata import ImagePreprocessing
    from training import photo_data

    monkeypatch.setattr(photo_data, "CACHE", tmp_path / "cache")
    pre = ImagePreprocessing(input_size=(28, 28), channels=1, mean=[0.1], std=[0.3], white_on_black=True, fit="digit")
    photos, labels = photo_data.photo_pool(digits.images[:200], digits.labels[:200], pre, 12, seed=3, workers=1)
    assert photos.shape == (12, 1, 28, 28) and photos.dtype == np.uint8 and len(labels) == 12
    assert photos.reshape(12, -1).max(1).min() > 100  # every photo still shows its ink, white on black
    assert len(list((tmp_path / "cache").iterdir())) == 1
    again, again_labels = photo_data.photo_pool(digits.images[:200], digits.labels[:200], pre, 12, seed=3, workers=1)
    assert np.array_equal(again, photos) and np.array_equal(again_labels, labels)


def test_dry_run_with_photos_in_the_batches(tmp_path, monkeypatch):
    from training import photo_data

    monkeypatch.setattr(photo_data, "CACHE", tmp_path / "cache")
    out = tmp_path / "run"
    assert train_main(["cnn", "--dry-run", "--photos", "0.5", "--threads", "1", "--out", str(out)]) == 0
    cfg = json.loads((out / "metrics.json").read_text())["train_config"]
    assert cfg["photos"] == 0.5


@pytest.mark.parametrize("total", [1, 2, 4, 5, 6, 10, 37])
def test_onecycle_schedule_runs_any_number_of_steps(total):
    from training.common import TrainConfig, build_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = build_scheduler(opt, TrainConfig(schedule="onecycle", optimizer="sgd", lr=0.1), total)
    assert sched is not None
    for _ in range(total):  # torch raised ZeroDivisionError at 5 steps (the warm-up exactly one step long)
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] < 0.1


def test_init_fine_tunes_its_own_run_and_refuses_another_model_or_split(tmp_path):
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    assert train_main(["lenet5", "--dry-run", "--seed", "1", "--out", str(base), "--no-progress"]) == 0
    start = torch.load(base / "checkpoint.pt", weights_only=True)["state_dict"]
    # a learning rate of almost nothing: the tuned weights are the checkpoint's, not a fresh draw of seed 2
    args = ["lenet5", "--dry-run", "--seed", "2", "--lr", "1e-12", "--init", str(base / "checkpoint.pt")]
    assert train_main([*args, "--out", str(tuned), "--no-progress"]) == 0
    ckpt = torch.load(tuned / "checkpoint.pt", weights_only=True)
    weights = [k for k in start if k.endswith("weight")]
    assert weights and all(torch.allclose(ckpt["state_dict"][k], start[k], atol=1e-6) for k in weights)
    assert ckpt["train_config"]["init"] == str(base / "checkpoint.pt")
    with pytest.raises(SystemExit, match="another split seed"):
        train_main([*args, "--split-seed", "3", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="another model"):
        train_main(["cnn", "--dry-run", "--init", str(base / "checkpoint.pt"), "--out", str(tmp_path / "y")])
    (tmp_path / "notes.txt").write_text("not a checkpoint")  # was torch's traceback and its weights_only=False advice
    with pytest.raises(SystemExit, match=r"notes\.txt: not a checkpoint written by python -m training"):
        train_main(["lenet5", "--dry-run", "--init", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "z")])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cnn", "--data", "{tmp}/missing", "--no-progress"], "python -m training: {tmp}/missing: not a folder"),
        (["rnn-classifier", "--data", "{tmp}/missing.csv", "--no-progress"], "No such file or directory"),
        (["rnn-classifier", "--data", "{tmp}/one.csv", "--no-progress"], "two or more labels"),
        (["cnn", "--data", "{tmp}", "--epochs", "0"], "argument --epochs: 0 is not at least 1"),
        (["rnn-classifier", "--no-progress"], "--data is required (or --dry-run)"),
        (["rnn-classifier", "--data", "{tmp}", "--no-progress"], "is a folder: a text model reads a CSV or TSV file"),
        (["rnn-classifier", "--data", "{tmp}/three.csv", "--no-progress"], "3 rows: too few to hold out a validation"),
        (["cnn", "--data", "{tmp}/few", "--no-progress"], "2 rows: too few to hold out a validation split"),
        # a training audit's (2026-12-06): each was a traceback, or a silently wrong run
        (["cnn", "--dry-run", "--val-fraction", "-0.1"], "--val-fraction: -0.1 is not a finite number above 0"),
        (["cnn", "--dry-run", "--size", "-5"], "argument --size: -5 is not from 1 to 256"),
        (["cnn", "--dry-run", "--threads", "-1"], "argument --threads: -1 is not at least 0"),
        (["cnn", "--dry-run", "--lr", "nan"], "argument --lr: nan is not a finite number above 0"),
        (["cnn", "--dry-run", "--label-smoothing", "2"], "2 is not a finite number at least 0 and below 1"),
        (["cnn", "--dry-run", "--model-arg", "foo"], "--model-arg 'foo': KEY=JSON"),
        (["cnn", "--dry-run", "--model-arg", "foo=1", "--no-progress"], "unknown config field(s) ['foo']"),
        (["rnn-classifier", "--data", "{tmp}/SHOUT.TSV", "--no-progress"], "3 rows: too few"),  # read as a TSV
        (["rnn-classifier", "--data", "{tmp}/twice.csv", "--no-progress"], "3 distinct texts (of 6 rows): too few"),
        (["cnn", "--data", "{tmp}/few", "--channels", "3", "--fit", "digit"], "--fit digit reads pen strokes on one"),
        # a second training audit's (2026-12-07): a model of 5 classes trained on 10, exported, and refused by the
        # server at every start; a traceback; 32 GB asked for; a blank folder reported as a diverged run; --out a
        # file, found after training
        (["cnn", "--dry-run", "--model-arg", "num_classes=5"], "--model-arg num_classes=5: the data fixes it at 10"),
        (["cnn", "--dry-run", "--model-arg", "in_channels=3"], "--model-arg in_channels=3: the data fixes it at 1"),
        (["autoencoder", "--dry-run", "--model-arg", "input_size=64"], "input_size=64: the data fixes it at 28"),
        (["rnn-classifier", "--dry-run", "--model-arg", "num_classes=3"], "num_classes=3: the data fixes it at 2"),
        (["hopfield-hebbian", "--dry-run", "--model-arg", "units=5"], "units=5: the patterns fix it at 784"),
        (["rnn-classifier", "--data", "{tmp}/empty.csv"], "empty.csv is empty: it needs a header row naming"),
        (["cnn", "--dry-run", "--size", "5000"], "argument --size: 5000 is not from 1 to 256"),
        (["cnn", "--data", "{tmp}/blank", "--no-progress"], "channel 0 of every training image is one value"),
        (["cnn", "--dry-run", "--out", "{tmp}/one.csv"], "--out {tmp}/one.csv is a file, not a folder"),
        # IDX files come at their size and channels: the flags trained a 28 x 28 grey model as if not given
        (
            ["cnn", "--data", str(REPO.parent / "shared" / "data" / "mnist"), "--size", "14"],
            "--size: an image folder's; mnist's images",
        ),
        (["cnn", "--dry-run", "--channels", "3"], "--channels: an image folder's; sklearn-digits's images are as"),
    ],
)
def test_a_careless_command_line_gets_one_line_not_a_traceback(tmp_path, capsys, argv, message):
    """A new user's mistakes, each once a traceback: no --data for a text model, a folder where a table belongs,
    and too few rows to measure on (an empty validation split divided by zero)."""
    (tmp_path / "one.csv").write_text("text,label\ngood,pos\nfine,pos\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "three.csv").write_text("text,label\ngood,pos\nbad,neg\nso so,mid\n")
    (tmp_path / "SHOUT.TSV").write_text("text\tlabel\ngood\tpos\nbad\tneg\nso so\tmid\n")
    (tmp_path / "twice.csv").write_text("text,label\n" + "good,pos\nbad,neg\nso so,mid\n" * 2)
    for cls, value in (("dark", 30), ("light", 220)):
        (tmp_path / "few" / cls).mkdir(parents=True)
        (tmp_path / "few" / cls / "0.png").write_bytes(png_bytes(np.full((20, 20), value, dtype=np.uint8)))
        (tmp_path / "blank" / cls).mkdir(parents=True)
        for i in range(6):  # white pages: the front door finds nothing on any of them
            (tmp_path / "blank" / cls / f"{i}.png").write_bytes(png_bytes(np.full((20, 20), 255, dtype=np.uint8)))
    with pytest.raises(SystemExit) as e:
        train_main([a.format(tmp=tmp_path) for a in argv])
    said = str(e.value.code) if isinstance(e.value.code, str) else capsys.readouterr().err
    assert message.format(tmp=tmp_path) in said


def test_export_refuses_what_is_not_a_checkpoint_in_one_line(tmp_path, capsys):
    from export.__main__ import main as export_main

    (tmp_path / "metrics.json").write_text('{"accuracy": 1}')
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"")
    for path, message in ((tmp_path / "metrics.json", "not a checkpoint written by python -m training"),
                          (tmp_path, "no such file"), (tmp_path / "gone.pt", "no such file"),
                          (tmp_path / "run", "is training's folder: export its checkpoint")):  # fmt: skip
        with pytest.raises(SystemExit) as e:
            export_main([str(path), "--out", str(tmp_path / "out")])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_preset_names_its_own_datas_classes_never_an_image_folders(tmp_path):
    """--dataset mnist on a folder of ten classes named zero ... nine renamed them '0' ... '9' in sorted-folder
    order ('eight' became '0'), silently: a training audit's."""
    from training.__main__ import build_parser
    from training.cli import load_images

    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for i, name in enumerate(names):
        (tmp_path / name).mkdir()
        for j in range(2):
            (tmp_path / name / f"{j}.png").write_bytes(png_bytes(np.full((20, 20), 20 * i + j, dtype=np.uint8)))
    args = build_parser().parse_args(["cnn", "--data", str(tmp_path), "--dataset", "mnist"])
    ds, _, _ = load_images(args)
    assert ds.label_names == sorted(names)


def test_a_run_that_diverged_says_so_in_one_line(tmp_path):
    """Every validation loss NaN: there is no best epoch to keep (it failed restoring an empty state_dict)."""
    with pytest.raises(SystemExit, match=r"not finite in any epoch .* lower --lr"):
        train_main(["mlp", "--dry-run", "--lr", "1e30", "--no-progress", "--out", str(tmp_path)])


def test_a_model_arg_equal_to_what_the_data_fixes_is_taken_as_the_datas():
    """--model-arg num_classes=10.0 on ten classes is no contradiction; the config gets the data's 10, not a float a
    layer refuses (a review's)."""
    from training.common import fixed_by_data

    merged = fixed_by_data({"num_classes": 10.0, "dropout": 0.2}, {"num_classes": 10, "in_channels": 1})
    assert merged == {"num_classes": 10, "in_channels": 1, "dropout": 0.2} and type(merged["num_classes"]) is int
    with pytest.raises(ValueError, match="num_classes=5: the data fixes it at 10"):
        fixed_by_data({"num_classes": 5}, {"num_classes": 10})


def _refusal(argv):
    import models
    from training.__main__ import RECIPES, _parser_and_owners
    from training.cli import refuse_unread

    parser, owners = _parser_and_owners()
    refuse_unread(parser, argv, RECIPES[models.get_entry(argv[0]).family], owners)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["mlp", "--vectors", "runs/word2vec"], "--vectors (text-classification's)"),
        (["rnn-classifier", "--size", "32", "--photos", "0.3"], "--size, --photos (image-classification's)"),
        (["cnn", "--cd-k", "3"], "--cd-k (rbm's)"),
        (["dcgan", "--optimizer", "sgd", "--augment", "digits"], "--optimizer, --augment"),
        (["vae", "--teacher", "artifacts/mnist-cnn"], "--teacher"),
        (["hopfield-pseudo-inverse", "--epochs", "3"], "--epochs"),
        (["rbm", "--keep", "best", "--optimizer", "adam"], "--optimizer, --keep"),  # plain SGD, every epoch kept
        (["dbn-autoencoder", "--no-persistent"], "--[no-]persistent (rbm's)"),
        (["cgan", "--label-smoothing", "0"], "--label-smoothing"),  # typed, even at a value that changes nothing
        (["cnn", "--loss", "bce"], "--loss (autoencoder's)"),
        (
            ["cnn", "--photo-pool", "500", "--teacher-weight", "0.3"],
            "--teacher-weight (without --teacher), --photo-pool (without --photos)",
        ),
        (["lenet5", "--teacher", "a", "--label-smoothing", "0.1"], "--label-smoothing (with --teacher)"),
        (
            ["rnn-classifier", "--unlabelled-rows", "9", "--tune-vectors"],
            "--tune-vectors (without --vectors), --unlabelled-rows (without --unlabelled)",
        ),
    ],
)
def test_a_flag_the_model_would_not_read_is_refused_not_ignored(tmp_path, capsys, argv, named):
    """--vectors to a CNN, --photos to a text model trained as if they were not there (a training audit's)."""
    with pytest.raises(SystemExit, match="do not read " + re.escape(named) + "$"):
        _refusal(argv)
    with pytest.raises(SystemExit, match=re.escape(named)):  # before any data is read or anything written
        train_main([*argv, "--dry-run", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_flag_the_model_reads_is_taken():
    _refusal(["dbn-autoencoder", "--cd-k", "2", "--loss", "mse"])  # its RBMs' and its fine-tuning's
    _refusal(["rnn-classifier", "--max-len", "32", "--threads", "1"])  # its own and a shared one it reads
    _refusal(
        ["rnn-classifier", "--teacher", "a", "--unlabelled", "u", "--unlabelled-rows", "9", "--teacher-weight", "1"]
    )
    _refusal(["cnn", "--photos", "0.3", "--photo-pool", "500", "--label-smoothing", "0.1"])


def test_every_training_line_of_the_makefile_reads_every_flag_it_gives():
    """make models' lines, as make would run them: none gives a flag its model would ignore (or is refused)."""
    out = subprocess.run(["make", "-n", "-B", "models"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    lines = out.replace("\\\n", " ").splitlines()  # a recipe line continued with a backslash is one command
    commands = [shlex.split(line.split(" -m training ", 1)[1]) for line in lines if " -m training " in line]
    assert len(commands) >= 15, lines
    for argv in commands:
        _refusal(argv)


def test_a_users_odd_files_are_read_or_named_never_a_traceback(tmp_path, caplog):
    """A CLI audit's (2026-12-07): a bit-rotted PNG that Pillow opens and fails to decode (SyntaxError) stopped
    training with a traceback; JPEGs named .jfif (Windows' browsers) or .jpe were left out silently; a class folder
    or file whose name is not UTF-8 (an old zip's) gave a cryptic UnicodeEncodeError naming nothing."""
    import os
    import struct
    import zlib

    from contract.metadata import ImagePreprocessing

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    pre = ImagePreprocessing(input_size=(16, 16), channels=1, mean=[0], std=[1], white_on_black=False, fit="resize")
    for cls in ("circle", "square"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "0.png").write_bytes(png_bytes(np.full((20, 20), 60, dtype=np.uint8)))
    pixels = zlib.compress(b"".join(b"\x00" + bytes([i * 12] * 20) for i in range(20)))
    head = chunk(b"IHDR", struct.pack(">IIBBBBB", 20, 20, 8, 0, 0, 0, 0)) + chunk(b"IDAT", pixels[:10])
    rotted = b"\x89PNG\r\n\x1a\n" + head + chunk(b"\x02\xe6\xb3N", pixels[10:]) + chunk(b"IEND", b"")
    (tmp_path / "circle" / "rotted.png").write_bytes(rotted)
    jpeg = png_bytes(np.full((20, 20), 90, dtype=np.uint8), fmt="JPEG")
    (tmp_path / "square" / "a.jfif").write_bytes(jpeg)
    (tmp_path / "square" / "b.jpe").write_bytes(jpeg)
    latin1 = os.fsdecode(b"na\xefve.png")  # a name of Latin-1 bytes, held as a lone surrogate
    (tmp_path / "circle" / latin1).write_bytes(png_bytes(np.full((20, 20), 9, dtype=np.uint8)))
    with caplog.at_level("WARNING"):
        ds = load_image_folder(tmp_path, pre)
    assert ds.labels.tolist() == [0, 1, 1, 1]  # circle's 0.png; square's 0.png, a.jfif, b.jpe
    assert "circle/rotted.png (SyntaxError)" in caplog.text and "(a name that is not UTF-8)" in caplog.text
    assert len(folder_digest(tmp_path)) == 64  # the digest reads any name's bytes
    (tmp_path / os.fsdecode(b"caf\xe9")).mkdir()
    with pytest.raises(ValueError, match="a class folder's name that is not UTF-8"):
        load_image_folder(tmp_path, pre)


def test_class_folders_that_are_one_class_are_refused_or_named(tmp_path, caplog):
    """The last CLI audit's leftover: "café" in NFC beside "café" in NFD (a Mac's zip), or a link to a sibling
    folder, became two classes of the same pictures without a word; folders differing only in case are named."""
    import unicodedata

    from contract.metadata import ImagePreprocessing

    pre = ImagePreprocessing(input_size=(16, 16), channels=1, mean=[0], std=[1], white_on_black=False, fit="resize")
    for cls, value in (("Cat", 40), ("cat", 120), ("dog", 200)):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "0.png").write_bytes(png_bytes(np.full((20, 20), value, dtype=np.uint8)))
    with caplog.at_level("WARNING"):
        ds = load_image_folder(tmp_path, pre)
    assert ds.label_names == ["Cat", "cat", "dog"]
    assert "class folders 'Cat' and 'cat' differ only in letter case: two classes" in caplog.text
    (tmp_path / "pup").symlink_to(tmp_path / "dog", target_is_directory=True)
    with pytest.raises(ValueError, match="class folders 'dog' and 'pup' are the same folder"):
        load_image_folder(tmp_path, pre)
    (tmp_path / "pup").unlink()
    for form in ("NFC", "NFD"):
        (tmp_path / unicodedata.normalize(form, "café")).mkdir()
        (tmp_path / unicodedata.normalize(form, "café") / "0.png").write_bytes(
            png_bytes(np.full((20, 20), 9, np.uint8))
        )
    with pytest.raises(ValueError, match="are one name in two Unicode forms; merge them"):
        load_image_folder(tmp_path, pre)


def test_an_epoch_whose_weights_are_not_numbers_is_never_kept():
    """A CLI audit's: at --lr 1e12 a run's second epoch had a finite loss (3e32) and its BatchNorm's variances inf;
    it was kept as the best, saved, and exported as a model answering the same for any input."""
    from training.common import EarlyStopping

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    stop = EarlyStopping(patience=5)
    model[1].running_var.fill_(float("inf"))
    stop.step(1, 3.2e32, model)
    with pytest.raises(ValueError, match="not finite in any epoch"):
        stop.restore(model)
    model[1].running_var.fill_(1.0)
    stop.step(2, 5.0, model)
    stop.restore(model)
    assert stop.best_epoch == 2
