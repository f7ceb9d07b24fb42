"""The `dcgan eval` command.

    dcgan eval RUN_OR_CHECKPOINT_OR_SAMPLES.npz [--n 10000] [--metrics fid,kid,...] [--reference test|train]
               [--seed S] [--dataset mnist] [--set data.key=value ...] [--device auto|cpu|cuda] [--raw]
               [--batch-size B] [--data-dir D] [--extractor auto|classifier|inception] [--classifier PATH]
               [--inception-weights PATH]
    dcgan eval train-classifier DATASET [--set data.key=value ...] [--epochs E] [--seed S] [--out PATH]
                                     [--batch-size B] [--device cpu] [--data-dir D] [--train-images N] [--test-images N]

`eval` has one positional TARGET and an optional second positional DATASET. When TARGET is the
word `train-classifier`, DATASET names the data to train the feature extractor on; otherwise
TARGET is what to evaluate. Options that belong to the other form are refused (exit 2), so a
mistyped command never silently does something else. (A run folder literally named
`train-classifier` is reached as ./train-classifier.)

`train-classifier mnist` (no --set) trains the shipped mnist-cnn-v1 extractor (default output:
the package's weights folder); any other labelled dataset trains small-cnn-v1 into the user's
cache (<cache>/classifiers/DATASET-KEY.safetensors), where `dcgan eval` finds it for runs on
that data.

Both print one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import UserError

TRAIN_CLASSIFIER = "train-classifier"

# options of each form, as (attribute, flag): refused in the other form when given
_EVAL_ONLY = (("n", "--n"), ("metrics", "--metrics"), ("reference", "--reference"), ("raw", "--raw"),
              ("extractor", "--extractor"), ("classifier", "--classifier"),
              ("inception_weights", "--inception-weights"))
_TRAIN_ONLY = (("epochs", "--epochs"), ("out", "--out"), ("train_images", "--train-images"),
               ("test_images", "--test-images"))


def add_parsers(sub) -> None:
    """Add `eval` to the main parser's subparsers (the `sub` of build_parser)."""
    from .evaluate import METRICS

    s = sub.add_parser(
        "eval", help="measure a run, checkpoint or .npz of samples (FID, KID, ...); or train the feature extractor",
        description="Evaluate generated images against real data with the project's classifier (shipped for MNIST, "
                    "or trained on your labelled data) or Inception-v3 as feature extractor, and print one JSON "
                    "object with the metrics and the protocol used. "
                    f"'dcgan eval {TRAIN_CLASSIFIER} DATASET' trains that classifier instead.",
        usage="dcgan eval RUN_OR_CHECKPOINT_OR_SAMPLES.npz [options]\n"
              f"       dcgan eval {TRAIN_CLASSIFIER} DATASET [--set data.key=value ...] [--epochs E] [--seed S] "
              f"[--out PATH]",
    )
    s.add_argument("target", metavar="TARGET",
                   help=f"a run folder (its newest checkpoint), a .ckpt file, a .npz from 'dcgan sample', "
                        f"or the word {TRAIN_CLASSIFIER}")
    s.add_argument("dataset_arg", metavar="DATASET", nargs="?",
                   help=f"with {TRAIN_CLASSIFIER}: the labelled dataset to train on (mnist, fashion-mnist, cifar10, "
                        f"folder/celeba/lsun with --set data.path=... --set data.labels_from_subfolders=true)")
    s.add_argument("--seed", type=int, default=None, help="generation noise and KID subsets (eval); "
                                                          "initialisation and data order (train-classifier); default 0")
    s.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: auto for eval, "
                                                  "cpu for train-classifier)")
    s.add_argument("--dataset", default=None, help="the real data of a .npz (default mnist); a run's comes from "
                                                   "its checkpoint")
    s.add_argument("--data-dir", default=None, help="data root (default $DCGAN_DATA, else ~/.cache/dcgan)")
    s.add_argument("--set", action="append", default=None, metavar="data.KEY=VALUE",
                   help="data settings (repeatable): of the data to train the classifier on, or of an .npz's real "
                        "data, e.g. --set data.path=/images --set data.labels_from_subfolders=true")
    s.add_argument("--batch-size", type=int, default=None,
                   help="images per generator/extractor batch (eval, default 500); training batch "
                        "(train-classifier, default 128)")
    e = s.add_argument_group("evaluation")
    e.add_argument("--n", type=int, default=None, help="images to generate / first images of a .npz (default 10000)")
    e.add_argument("--metrics", default=None,
                   help=f"comma-separated subset of [{','.join(METRICS)}] or all (default: all that apply)")
    e.add_argument("--reference", choices=["test", "train"], default=None,
                   help="real split to compare with (default test; Inception on a dataset without one: train): all of it, or a fixed random "
                        "subset of n images when n is smaller")
    e.add_argument("--raw", action="store_true", default=None, help="use the raw generator instead of its EMA")
    e.add_argument("--extractor", choices=["auto", "classifier", "inception"], default=None,
                   help="feature extractor (default auto: the project's classifier for grey images and for RGB data "
                        f"a classifier was trained on with '{TRAIN_CLASSIFIER}', else Inception-v3); "
                        "Inception metrics: fid, kid, inception_score")
    e.add_argument("--classifier", default=None, metavar="PATH",
                   help=f"weights (.safetensors, record beside it) written by '{TRAIN_CLASSIFIER}'; for an .npz its "
                        "record also names the real data")
    e.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="local FID Inception weights pt_inception-2015-12-05-6726825d.pth (default "
                        "$DCGAN_INCEPTION_WEIGHTS); needs pip install dcgan[inception]")
    t = s.add_argument_group(TRAIN_CLASSIFIER)
    t.add_argument("--epochs", type=int, default=None, help="training epochs (default 3)")
    t.add_argument("--out", default=None, help="weights file .safetensors (default: mnist: the package's "
                                               "dcgan/metrics/weights/mnist-classifier.safetensors; other data: "
                                               "<cache>/classifiers/DATASET-KEY.safetensors, where eval finds it)")
    t.add_argument("--train-images", type=int, default=None,
                   help="train on the first N images only (quick checks; shipped weights use the whole split)")
    t.add_argument("--test-images", type=int, default=None,
                   help="measure on the first N test images only (quick checks)")
    s.set_defaults(func=cmd_eval)


def _refuse(args, options, form: str) -> None:
    for attr, flag in options:
        if getattr(args, attr) is not None:
            raise UserError(f"{flag} is not an option of '{form}'; see 'dcgan eval --help'")


def _data_config(dataset: str, sets: list[str] | None):
    """DataConfig of `dataset` with --set data.* overrides, validated."""
    from ..config import Config, set_data_items

    cfg = Config()
    cfg.set("data.dataset", dataset, "DATASET")
    set_data_items(cfg, sets, "dcgan eval", fixed=("data.dataset", "data.split"),
                   example="data.path=..., data.labels_from_subfolders=true")
    cfg.validate()
    from ..data.sources import SOURCES

    SOURCES.get(dataset)  # an unknown dataset: UserError naming the known ones
    return cfg.data


def cmd_eval(args) -> int:
    if args.target == TRAIN_CLASSIFIER:
        return _cmd_train_classifier(args)
    from .evaluate import evaluate

    _refuse(args, _TRAIN_ONLY, "dcgan eval RUN")
    if args.dataset_arg is not None:
        raise UserError(f"unexpected argument {args.dataset_arg!r}: 'dcgan eval' takes one run folder, checkpoint or "
                        f".npz (to train the feature extractor: 'dcgan eval {TRAIN_CLASSIFIER} DATASET')")
    data = None
    if args.set:
        if not args.dataset:
            raise UserError("--set data.* describes an .npz's real data and needs --dataset (e.g. --dataset folder "
                            "--set data.path=/images); a run's data comes from its checkpoint")
        data = _data_config(args.dataset, args.set)
    from ..progress import showing

    with showing():  # bars for generation and feature extraction on a terminal
        result = evaluate(args.target, n=10000 if args.n is None else args.n, metrics=args.metrics,
                          reference=args.reference, seed=args.seed or 0, dataset=args.dataset,
                          device=args.device or "auto", ema=not args.raw, batch_size=args.batch_size or 500,
                          data_dir=args.data_dir, extractor=args.extractor, inception_weights=args.inception_weights,
                          classifier=args.classifier, data=data)
    print(json.dumps(result))
    return 0


def _cmd_train_classifier(args) -> int:
    from .classifier import DEFAULT_BATCH, DEFAULT_EPOCHS, train_any_classifier, train_classifier, train_command

    form = f"dcgan eval {TRAIN_CLASSIFIER}"
    _refuse(args, _EVAL_ONLY, form)
    if args.dataset_arg and args.dataset and args.dataset_arg != args.dataset:
        raise UserError(f"two datasets given: {args.dataset_arg} and --dataset {args.dataset}; give one")
    dataset = args.dataset_arg or args.dataset
    if not dataset:
        raise UserError(f"'{form}' needs the DATASET to train on, e.g. '{form} mnist'")
    epochs = DEFAULT_EPOCHS if args.epochs is None else args.epochs
    seed = args.seed or 0
    batch = DEFAULT_BATCH if args.batch_size is None else args.batch_size
    extra = (f" --batch-size {batch}" if args.batch_size is not None else "") \
        + (f" --out {args.out}" if args.out else "") \
        + "".join(f" --{name.replace('_', '-')} {getattr(args, name)}" for name in ("train_images", "test_images")
                  if getattr(args, name) is not None)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if dataset == "mnist" and not args.set:  # the shipped extractor (mnist-cnn-v1), as it was trained
        command = f"{form} {dataset} --epochs {epochs} --seed {seed}" + extra
        record = train_classifier(dataset, epochs=epochs, seed=seed, out=args.out, batch=batch,
                                  device=args.device or "cpu", data_dir=args.data_dir, command=command,
                                  train_images=args.train_images, test_images=args.test_images, log=log)
    else:
        data = _data_config(dataset, args.set)
        command = train_command(data) + f" --epochs {epochs} --seed {seed}" + extra
        record = train_any_classifier(data, epochs=epochs, seed=seed, out=args.out, batch=batch,
                                      device=args.device or "cpu", data_dir=args.data_dir, command=command,
                                      train_images=args.train_images, test_images=args.test_images, log=log)
    print(json.dumps(record))
    return 0


def build_standalone_parser() -> argparse.ArgumentParser:
    """A parser with only `eval`, for tests and for `python -m dcgan.metrics.cli`."""
    p = argparse.ArgumentParser(prog="dcgan")
    add_parsers(p.add_subparsers(dest="command", required=True))
    return p


def main(argv: list[str] | None = None) -> int:
    """Run `eval` alone, with the exit codes of dcgan.cli.main (0 ok, 2 bad input)."""
    args = build_standalone_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"dcgan: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
