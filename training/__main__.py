"""python -m training <model> --data PATH [...]: train a registered model into a checkpoint.

Examples:
    python -m training cnn --data ../shared/data/mnist --out runs/mnist-cnn
    python -m training cnn --data ../shared/data/fashion-mnist --epochs 30 --out runs/fashion-cnn
    python -m training cnn --data my_photos/ --fit contain --out runs/my-cnn   # one sub-folder per class
    python -m training rnn-classifier --data ../shared/data/sentiment/sst2/train.tsv --out runs/sst2-lstm
    python -m training rnn-classifier --data reviews.csv --text-column review --label-column stars
    python -m training lenet5 --dry-run                                          # tiny data, one batch
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

import models
from contract.data import PRESETS, Dataset, DatasetPreset, load_idx_dataset, load_image_folder, load_sklearn_digits
from contract.text_data import PRESETS as TEXT_PRESETS
from contract.text_data import load_table, preset_for, synthetic_sentiment
from training.ae_loop import AETrainConfig, train_autoencoder
from training.augment import PRESETS as AUGMENT_PRESETS
from training.common import TrainConfig
from training.gan_loop import GANTrainConfig, train_gan
from training.loop import train
from training.plots import plot_curves, plot_series
from training.text_loop import TextTrainConfig, train_text
from training.vae_loop import VAETrainConfig, train_vae

log = logging.getLogger("training")


def _parse_model_args(pairs: list[str]) -> dict:
    out: dict = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        out[key] = json.loads(raw)  # e.g. channels=[16,32,64] dropout=0.2
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("model", choices=models.list_models(), help="registered architecture")
    p.add_argument(
        "--data",
        help="an MNIST-format folder (train-*-idx*-ubyte[.gz]), an image folder "
        "(one sub-folder per class), or 'sklearn-digits'; default with --dry-run: sklearn-digits",
    )
    p.add_argument("--dataset", choices=sorted(PRESETS), help="dataset preset (default: inferred from --data)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/<model>)")
    # shared flags default to None: the task's config (TrainConfig / TextTrainConfig) supplies the default
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 0.05 SGD / 3e-3 Adam)")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--schedule", choices=["onecycle", "cosine", "none"], default=None)
    p.add_argument("--label-smoothing", type=float, default=None)
    p.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs")
    p.add_argument("--augment", choices=sorted(AUGMENT_PRESETS), default=None, help="default: the dataset's")
    p.add_argument(
        "--fit",
        choices=["resize", "contain", "digit"],
        default=None,
        help="how images of another size are fitted (default: the dataset's)",
    )
    p.add_argument(
        "--photos",
        type=float,
        default=None,
        help="image classifiers: share of each batch that are training images rendered as phone photos and "
        "read through the service's front door (default 0)",
    )
    p.add_argument("--photo-pool", type=int, default=None, help="training images rendered as photos (20000)")
    p.add_argument("--size", type=int, default=None, help="input size for image folders (default 28)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=None, help="image-folder channels (default 1)")
    p.add_argument("--val-fraction", type=float, default=None)
    p.add_argument("--split-seed", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="architecture override, e.g. --model-arg 'channels=[16,32,64]'",
    )
    t = TextTrainConfig()
    text = p.add_argument_group("text models")
    text.add_argument("--text-column", help="CSV/TSV column holding the text (default: the preset's)")
    text.add_argument("--label-column", help="CSV/TSV column holding the label (default: the preset's)")
    text.add_argument("--max-len", type=int, help="tokens kept per text (default: the preset's)")
    text.add_argument("--min-freq", type=int, default=t.min_freq, help="vocabulary: minimum token count")
    text.add_argument("--max-vocab", type=int, default=t.max_vocab, help="vocabulary: maximum size")
    text.add_argument("--split", choices=["random", "sentences"], help="validation split (default: preset's)")
    text.add_argument("--clip-grad", type=float, default=t.clip_grad, help="gradient-norm clipping")
    ae = p.add_argument_group("autoencoders")
    ae.add_argument("--loss", choices=["bce", "mse"], default=AETrainConfig().loss, help="reconstruction loss")
    g = GANTrainConfig()
    gan = p.add_argument_group("GANs")
    gan.add_argument("--gan-loss", choices=["bce", "wgan-gp"], default=g.gan_loss, help="adversarial objective")
    gan.add_argument("--n-critic", type=int, default=g.n_critic, help="critic steps per generator step (0: auto)")
    gan.add_argument("--gp-weight", type=float, default=g.gp_weight, help="WGAN-GP gradient-penalty weight")
    gan.add_argument("--ema-decay", type=float, default=g.ema_decay, help="generator weight averaging")
    p.add_argument("--dry-run", action="store_true", help="one batch of tiny data, one epoch")
    p.add_argument("--no-progress", action="store_true")
    return p


def _common(args: argparse.Namespace, defaults: TrainConfig) -> dict:
    """CLI values for the fields every task shares; None means the task's default."""
    given = {
        "model": args.model,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "schedule": args.schedule,
        "label_smoothing": args.label_smoothing,
        "patience": args.patience,
        "val_fraction": args.val_fraction,
        "split_seed": args.split_seed,
        "seed": args.seed,
        "threads": args.threads,
        "dry_run": args.dry_run,
        "progress": not args.no_progress and sys.stderr.isatty(),
    }
    return {k: (getattr(defaults, k) if v is None else v) for k, v in given.items()}


def _train_text(args: argparse.Namespace) -> dict:
    if (args.data in (None, "synthetic") and args.dry_run) or args.data == "synthetic":
        ds = synthetic_sentiment()
        preset = TEXT_PRESETS["csv"]
    else:
        name = preset_for(Path(args.data))
        preset = TEXT_PRESETS[name]
        ds = load_table(args.data, name=name, text_column=args.text_column, label_column=args.label_column)
    cfg = TextTrainConfig(
        **_common(args, TextTrainConfig()),
        split=args.split or preset.split,
        max_len=args.max_len or preset.max_len,
        min_freq=args.min_freq,
        max_vocab=args.max_vocab,
        clip_grad=args.clip_grad,
    )
    log.info(
        "training %s on %s (%d texts, %d classes) with %s",
        args.model,
        ds.name,
        len(ds.labels),
        len(ds.label_names),
        cfg,
    )
    return train_text(ds, cfg, _parse_model_args(args.model_arg))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    task = {"text-classification": _train_text, "autoencoder": _train_autoencoder, "gan": _train_gan, "vae": _train_vae}
    ckpt = task.get(models.get_entry(args.model).family, _train_images)(args)
    return _write(ckpt, args)


def _load_images(args: argparse.Namespace) -> tuple[Dataset, dict, DatasetPreset]:
    """The image dataset named by --data, and the preprocessing record the checkpoint will carry."""
    data = args.data or ("sklearn-digits" if args.dry_run else None)
    if data is None:
        raise SystemExit("--data is required (or --dry-run)")
    if data == "sklearn-digits":
        name = "sklearn-digits"
    elif Path(data, "train-images-idx3-ubyte.gz").exists() or Path(data, "train-images-idx3-ubyte").exists():
        name = args.dataset or ("fashion-mnist" if "fashion" in Path(data).resolve().name.lower() else "mnist")
    else:
        name = "image-folder"
    preset = PRESETS[args.dataset or name]
    size = args.size or 28
    pre = {
        "input_size": [size, size],
        "channels": args.channels or 1,
        "white_on_black": preset.white_on_black,
        "fit": args.fit or preset.fit,
        "mean": [0.0],
        "std": [1.0],
    }
    if name == "sklearn-digits":
        ds = load_sklearn_digits(size)
    elif name == "image-folder":
        from contract.metadata import ImagePreprocessing

        pre["mean"], pre["std"] = [0.0] * pre["channels"], [1.0] * pre["channels"]
        ds = load_image_folder(data, ImagePreprocessing.model_validate(pre))
    else:
        ds = load_idx_dataset(data, name)
        ds.name = args.dataset or name
    if preset.labels is not None and args.dataset and len(preset.labels) == len(set(ds.labels.tolist())):
        ds.label_names = list(preset.labels)
    pre["input_size"] = list(ds.images.shape[2:])
    pre["channels"] = int(ds.images.shape[1])
    return ds, pre, preset


def _train_autoencoder(args: argparse.Namespace) -> dict:
    ds, pre, _ = _load_images(args)
    cfg = AETrainConfig(**_common(args, AETrainConfig()), loss=args.loss, augment=args.augment or "none")
    log.info("training %s on %s (%d images) with %s", args.model, ds.name, len(ds.labels), cfg)
    return train_autoencoder(ds, cfg, _parse_model_args(args.model_arg), pre)


def _out_dir(args: argparse.Namespace) -> Path:
    return args.out or Path("runs") / args.model


def _train_gan(args: argparse.Namespace) -> dict:
    ds, pre, _ = _load_images(args)
    cfg = GANTrainConfig(
        **_common(args, GANTrainConfig()),
        gan_loss=args.gan_loss,
        n_critic=args.n_critic,
        gp_weight=args.gp_weight,
        ema_decay=args.ema_decay,
    )
    log.info("training %s on %s (%d images) with %s", args.model, ds.name, len(ds.labels), cfg)
    return train_gan(ds, cfg, _parse_model_args(args.model_arg), pre, sample_dir=_out_dir(args) / "samples")


def _train_vae(args: argparse.Namespace) -> dict:
    ds, pre, _ = _load_images(args)
    cfg = VAETrainConfig(**_common(args, VAETrainConfig()))
    log.info("training %s on %s (%d images) with %s", args.model, ds.name, len(ds.labels), cfg)
    return train_vae(ds, cfg, _parse_model_args(args.model_arg), pre, sample_dir=_out_dir(args) / "samples")


def _train_images(args: argparse.Namespace) -> dict:
    ds, pre, preset = _load_images(args)
    d = TrainConfig()
    cfg = TrainConfig(
        **_common(args, d),
        augment=args.augment or preset.augment,
        photos=d.photos if args.photos is None else args.photos,
        photo_pool=d.photo_pool if args.photo_pool is None else args.photo_pool,
    )
    log.info(
        "training %s on %s (%d images, %d classes) with %s",
        args.model,
        ds.name,
        len(ds.labels),
        len(ds.label_names),
        cfg,
    )
    return train(ds, cfg, _parse_model_args(args.model_arg), pre)


GAN_PANELS = {"loss": ["d_loss", "g_loss"], "discriminator output": ["d_real", "d_fake"]}
VAE_PANELS = {"-ELBO (nats per image)": ["train_neg_elbo", "val_neg_elbo"], "squared error": ["val_sse"]}


def _write(ckpt: dict, args: argparse.Namespace) -> int:
    out = _out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out / "checkpoint.pt")
    metrics = {k: ckpt[k] for k in ("model_name", "model_config", "train_config", "dataset", "metrics", "history")}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    title, family = f"{args.model} on {ckpt['dataset']['name']}", ckpt["family"]
    if family == "gan":
        plot_series(ckpt["history"], title, out / "curves.png", GAN_PANELS)
    elif family == "vae":
        plot_series(ckpt["history"], title, out / "curves.png", VAE_PANELS)
    else:
        plot_curves(ckpt["history"], title, out / "curves.png", "sse" if family == "autoencoder" else "accuracy")
    m = ckpt["metrics"]
    if family == "gan":
        log.info("trained %d epochs; samples per epoch in %s; wrote %s", m["epochs_run"], out / "samples", out)
    elif family == "vae":
        log.info("validation -ELBO %.2f nats/image at epoch %d; wrote %s", m["val_neg_elbo"], m["best_epoch"], out)
    elif "accuracy" in m:
        log.info(
            "validation accuracy %.4f (error %.2f%%) at epoch %d; wrote %s",
            m["accuracy"],
            100 * m["error_rate"],
            m["best_epoch"],
            out,
        )
    else:
        log.info("validation squared error per image %.3f at epoch %d; wrote %s", m["val_sse"], m["best_epoch"], out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
