"""Export: ONNX with a dynamic batch axis, strict parity, self-describing metadata, failure on mismatch."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from contract.images import normalize, prepare_image
from contract.metadata import ModelMetadata, sha256_file
from export.__main__ import main as export_main
from export.onnx_export import ParityError, load_checkpoint
from training.__main__ import main as train_main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    assert train_main(["cnn", "--dry-run", "--out", str(out), "--no-progress"]) == 0
    return out / "checkpoint.pt"


def test_export_writes_checked_onnx_and_metadata(tmp_path, checkpoint):
    assert export_main([str(checkpoint), "--out", str(tmp_path / "m"), "--dry-run"]) == 0
    meta = ModelMetadata.model_validate_json((tmp_path / "m" / "model.json").read_text())
    assert meta.name == "m" and meta.task == "image-classification" and meta.architecture == "cnn"
    assert meta.labels == [str(i) for i in range(10)]
    assert meta.preprocessing.input_size == (28, 28) and meta.preprocessing.white_on_black
    assert meta.inputs[0].shape == [-1, 1, 28, 28] and meta.outputs[0].shape == [-1, 10]
    assert meta.onnx_sha256 == sha256_file(tmp_path / "m" / "model.onnx")
    assert meta.checkpoint_sha256 == sha256_file(checkpoint)
    assert meta.parity.max_abs_diff <= 1e-5 and meta.parity.batch_sizes == [1, 8]
    assert "accuracy" in meta.metrics and meta.dataset.name == "sklearn-digits"
    onnx.checker.check_model(onnx.load(str(tmp_path / "m" / "model.onnx")))
    # training's curves beside the checkpoint travel with the artifact: the card's figure (only make models copied)
    assert (tmp_path / "m" / "curves.png").read_bytes() == (checkpoint.parent / "curves.png").read_bytes()


def test_exporting_over_a_calibrated_artifact_says_what_goes(tmp_path, artifact_root, checkpoint, caplog):
    import shutil

    shutil.copytree(artifact_root / "digits-cnn", tmp_path / "m")  # calibrated (tests/conftest.py)
    with caplog.at_level("WARNING"):
        assert export_main([str(checkpoint), "--out", str(tmp_path / "m"), "--dry-run"]) == 0
    assert "its calibration and out-of-distribution score go with the old graph" in caplog.text
    assert ModelMetadata.model_validate_json((tmp_path / "m" / "model.json").read_text()).calibration is None


def test_an_export_stopped_part_way_leaves_the_artifact_that_was_there(
    tmp_path, artifact_root, checkpoint, monkeypatch
):
    """A CLI audit's (2026-12-07): Ctrl-C as model.json was written over a served artifact left the new graph beside
    an empty model.json (the old artifact gone, the new one not made). Files go beside their places first, then
    are renamed in, model.json last."""
    import pathlib
    import shutil

    shutil.copytree(artifact_root / "digits-cnn", tmp_path / "m")
    before = {f.name: f.read_bytes() for f in (tmp_path / "m").iterdir()}
    real, calls = pathlib.Path.write_bytes, []

    def interrupted(self, data):  # the second file being written: Ctrl-C
        calls.append(self.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_main([str(checkpoint), "--out", str(tmp_path / "m"), "--dry-run"])
    monkeypatch.undo()
    assert calls[0].endswith(".partial")
    assert {f.name: f.read_bytes() for f in (tmp_path / "m").iterdir()} == before  # nothing half-written left


def test_exporting_over_another_kind_of_model_leaves_none_of_its_files(tmp_path, artifact_root, checkpoint, caplog):
    """A text model's vocabulary and the old figures stayed beside the new graph (a user audit): the figures were
    served as the new model's, and the folder read as a text model's to anyone looking."""
    import shutil

    shutil.copytree(artifact_root / "synthetic-lstm", tmp_path / "m")
    (tmp_path / "m" / "reliability.png").write_bytes(b"\x89PNG old figure")
    (tmp_path / "m" / "notes.txt").write_text("the user's own")  # not an artifact's file: kept
    with caplog.at_level("WARNING"):
        assert export_main([str(checkpoint), "--out", str(tmp_path / "m"), "--dry-run"]) == 0
    assert "removed reliability.png, vocab.json" in caplog.text
    assert sorted(f.name for f in (tmp_path / "m").iterdir()) == ["curves.png", "model.json", "model.onnx", "notes.txt"]
    (tmp_path / "other").mkdir()  # a folder whose model.json is not nnserve's: nothing of it is removed
    (tmp_path / "other" / "model.json").write_text('{"format": "another tool"}')
    (tmp_path / "other" / "figure.png").write_bytes(b"\x89PNG theirs")
    assert export_main([str(checkpoint), "--out", str(tmp_path / "other"), "--dry-run"]) == 0
    assert (tmp_path / "other" / "figure.png").read_bytes() == b"\x89PNG theirs"


def test_a_version_folder_names_the_model_after_its_parent(tmp_path, checkpoint):
    """README's versioned layout: --out artifacts/<name>/<version> wrote a model named "2"; the parent is named
    as the path names it, not as a link leads (a folder linked to store/abc123 named the model abc123)."""
    (tmp_path / "store" / "abc123").mkdir(parents=True)
    (tmp_path / "my-cnn").symlink_to(tmp_path / "store" / "abc123")
    assert export_main([str(checkpoint), "--out", str(tmp_path / "my-cnn" / "2"), "--dry-run"]) == 0
    meta = ModelMetadata.model_validate_json((tmp_path / "my-cnn" / "2" / "model.json").read_text())
    assert (meta.name, meta.version) == ("my-cnn", "2")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--out", "{tmp}/my cnn"], "'my cnn' cannot be a served model's name"),
        (["--out", "{tmp}/m", "--name", "bad/é"], "'bad/é' cannot be a served model's name"),
        (["--out", "{tmp}/m", "--version", "v 2"], "'v 2' cannot be a version"),
        (["--out", "{tmp}/m/3", "--version", "2"], "--version 2 for the folder of version 3"),
        (["--out", "{tmp}/file"], "cannot write {tmp}/file: File exists"),
        (["--out", "{tmp}/m", "--opset", "7"], "could not write opset 7 (it wrote 18)"),
        (["--out", "{ckpt}"], "{ckpt} is the checkpoint's folder"),  # its curves were copied onto themselves
    ],
)
def test_what_cannot_be_served_is_refused_in_one_line_writing_nothing(tmp_path, checkpoint, capsys, args, said):
    """A name with a space was exported and served, and then no /v1 route could name it; --opset 7 printed a
    traceback, exited 0 and wrote opset 18; a file as --out was a traceback."""
    (tmp_path / "file").write_text("")
    where = {"tmp": tmp_path, "ckpt": checkpoint.parent}
    with pytest.raises(SystemExit) as e:
        export_main([str(checkpoint), *(a.format(**where) for a in args), "--dry-run"])
    assert e.value.code == 2 and said.format(**where) in capsys.readouterr().err
    assert not list(tmp_path.rglob("model.*")) and not list(checkpoint.parent.glob("model.*"))


def test_a_file_as_out_is_refused_before_the_checkpoint_is_read(tmp_path, capsys):
    """A CLI audit's: it was said after the export and its parity check (13 s); now before the checkpoint is read
    (here one that is not a checkpoint at all)."""
    (tmp_path / "file").write_text("")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(SystemExit):
        export_main([str(tmp_path / "junk.pt"), "--out", str(tmp_path / "file")])
    assert f"cannot write {tmp_path / 'file'}: File exists" in capsys.readouterr().err


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_onnx_matches_torch_at_any_batch(tmp_path, checkpoint, digits, batch):
    export_main([str(checkpoint), "--out", str(tmp_path / "m"), "--dry-run"])
    meta = ModelMetadata.model_validate_json((tmp_path / "m" / "model.json").read_text())
    _, model = load_checkpoint(checkpoint)
    x = normalize(np.stack([prepare_image_from_array(a) for a in digits.images[:batch]]), meta.preprocessing)
    sess = ort.InferenceSession(str(tmp_path / "m" / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(
            sess.run(None, {"input": x})[0], model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5
        )


def prepare_image_from_array(a):
    from PIL import Image

    from contract.metadata import ImagePreprocessing

    pre = ImagePreprocessing(input_size=(28, 28), channels=1, mean=[0], std=[1], white_on_black=True, fit="digit")
    out = prepare_image(Image.fromarray(a[0]), pre)
    assert np.array_equal(out, a)  # images at the model size pass through untouched
    return out


def test_parity_failure_is_detected(tmp_path, checkpoint, monkeypatch):
    """A graph that disagrees with torch fails the export with exit 1 and writes nothing."""
    import export.onnx_export as ex

    real = ex.check_parity

    def drifted(model, session, pre):  # the torch side drifts after the graph was exported
        with torch.no_grad():
            model.head[-1].bias.add_(1e-3)
        return real(model, session, pre)

    with pytest.raises(ParityError, match="batch 1"):
        monkeypatch.setattr(ex, "check_parity", drifted)
        ex.export_checkpoint(checkpoint, tmp_path / "raised", name="x")
    assert export_main([str(checkpoint), "--out", str(tmp_path / "out"), "--dry-run"]) == 1
    assert not (tmp_path / "out" / "model.onnx").exists()
    assert not (tmp_path / "raised" / "model.onnx").exists()


def test_weights_that_are_not_numbers_or_do_not_fit_are_refused_in_one_line(tmp_path, checkpoint, capsys):
    """A CLI audit: a checkpoint with a NaN weight passed the parity check (NaN equals NaN to assert_allclose) and
    exported a graph answering NaN; one missing a weight stopped export with a traceback."""
    ckpt = torch.load(checkpoint, weights_only=False)
    weights = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point() and v.ndim > 1)
    ckpt["state_dict"][weights].view(-1)[0] = float("nan")
    torch.save(ckpt, tmp_path / "nan.pt")
    assert export_main([str(tmp_path / "nan.pt"), "--out", str(tmp_path / "nan"), "--dry-run"]) == 1
    assert not (tmp_path / "nan" / "model.onnx").exists()
    del ckpt["state_dict"][weights]
    torch.save(ckpt, tmp_path / "missing.pt")
    with pytest.raises(SystemExit):
        export_main([str(tmp_path / "missing.pt"), "--out", str(tmp_path / "missing"), "--dry-run"])
    err = capsys.readouterr().err
    assert "do not fit its model 'cnn'" in err and "Missing key" in err and "Traceback" not in err


def test_metadata_is_plain_json(tmp_path, checkpoint):
    export_main([str(checkpoint), "--out", str(tmp_path / "m"), "--name", "custom", "--version", "7", "--dry-run"])
    raw = json.loads((tmp_path / "m" / "model.json").read_text())
    assert raw["name"] == "custom" and raw["version"] == "7" and raw["schema_version"] == 1


def test_autoencoder_export(tmp_path):
    """One graph, two outputs (code, reconstruction), parity on both, a threshold and the loss recorded."""
    assert (
        train_main(
            [
                "autoencoder",
                "--dry-run",
                "--out",
                str(tmp_path / "ck"),
                "--no-progress",
                "--model-arg",
                "hidden=[64]",
                "--model-arg",
                "code_size=8",
            ]
        )
        == 0
    )
    assert export_main([str(tmp_path / "ck" / "checkpoint.pt"), "--out", str(tmp_path / "m"), "--dry-run"]) == 0
    meta = ModelMetadata.model_validate_json((tmp_path / "m" / "model.json").read_text())
    assert meta.task == "autoencoder" and [o.name for o in meta.outputs] == ["code", "reconstruction"]
    assert meta.outputs[0].shape == [-1, 8] and meta.outputs[1].shape == [-1, 1, 28, 28]
    assert meta.anomaly is not None and meta.anomaly.threshold == pytest.approx(meta.metrics["val_sse_p99"])
    assert meta.training["loss"] == "bce" and meta.parity.max_abs_diff <= 1e-5
    sess = ort.InferenceSession(str(tmp_path / "m" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    code, recon = sess.run(None, {"input": x})
    assert code.shape == (3, 8) and recon.shape == x.shape and recon.min() >= 0 and recon.max() <= 1
