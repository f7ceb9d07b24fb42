"""The `dcgan eval` command.

    dcgan eval RUN_OR_CHECKPOINT_OR_SAMPLES.npz [--n 10000] [--metrics fid,kid,...] [--reference test|train] ...
    dcgan eval train-classifier DATASET [--set data.key=value ...] [--epochs E] [--seed S] [--out PATH] ...

TARGET `train-classifier` trains the feature extractor on DATASET (mnist without --set: the shipped
mnist-cnn-v1, into the package; else small-cnn-v1, into the cache where `dcgan eval` finds it); any
other TARGET (./train-classifier for a run folder of that name) is evaluated. Options of the other
form are refused (exit 2). Both print one JSON object on stdout; progress goes to stderr (--quiet:
none), and eval's one-line summary for a person after its JSON. A toy run (2-D points) is measured
against its target with the measures of its tick lines (dcgan/toy/evaluate.py).
"""

from __future__ import annotations

import json
import sys

from .config import Config, set_data_items
from .data.sources import SOURCES
from .errors import UserError
from .progress import showing

TRAIN_CLASSIFIER = "train-classifier"

# options of each form, as (attribute, flag): refused in the other form when given
_EVAL_ONLY = tuple((a, "--" + a.replace("_", "-")) for a in ("n", "metrics", "reference", "raw", "extractor",
                                                             "classifier", "inception_weights", "no_record"))
_TRAIN_ONLY = tuple((a, "--" + a.replace("_", "-")) for a in ("epochs", "out", "train_images", "test_images"))


def add_parsers(sub, add_shared, deprecated) -> None:
    """Add `eval` to the main parser's subparsers (the `sub` of build_parser); `add_shared` and
    `deprecated` are dcgan.cli's add_shared and Deprecated (passed in: cli imports this module), so
    --device, --seed, --data-dir, --quiet and --batch are those of every command that runs a model."""
    from .metrics.evaluate import METRICS

    s = sub.add_parser(
        "eval", help="measure a run, checkpoint or .npz of samples (FID, KID, ...); or train the feature extractor",
        description="Evaluate generated images against real data with the project's classifier (shipped for MNIST, or "
                    "trained on your labelled data) or Inception-v3 as feature extractor, and print one JSON object "
                    "with the metrics and the protocol used (stdout), then a one-line summary (stderr). A toy run "
                    "(2-D points) is measured against its target: modes covered, high-quality fraction, D accuracy "
                    f"or mean/covariance error. 'dcgan eval {TRAIN_CLASSIFIER} DATASET' trains that classifier.",
        usage=f"dcgan eval RUN_OR_CHECKPOINT_OR_SAMPLES.npz [options]\n       dcgan eval {TRAIN_CLASSIFIER} DATASET "
              f"[--set data.key=value ...] [--epochs E] [--seed S] [--out PATH]")
    s.add_argument("target", metavar="TARGET", help="a run folder (its newest checkpoint), a .ckpt file, a .npz from "
                                                    f"'dcgan sample', or the word {TRAIN_CLASSIFIER}")
    s.add_argument("dataset_arg", metavar="DATASET", nargs="?",
                   help=f"with {TRAIN_CLASSIFIER}: the labelled dataset to train on (mnist, fashion-mnist, cifar10, "
                        f"folder/celeba/lsun with --set data.path=... --set data.labels_from_subfolders=true)")
    add_shared(s, device_default=None, device_note="; train-classifier: default cpu",
               seed="generation noise and KID subsets (eval); initialisation and data order (train-classifier); "
                    "default 0",
               quiet="no progress bars or progress lines: only the JSON on stdout and, for eval, its summary line "
                     "on stderr (warnings still show)",
               batch="images per generator/extractor batch (eval, default 500; the result does not depend on it); "
                     "training batch (train-classifier, default 128)")
    s.add_argument("--batch-size", dest="batch_size", type=int, action=deprecated, new="--batch",
                   why="every dcgan command spells the batch size --batch")
    s.add_argument("--dataset", default=None, help="the real data of a .npz (default mnist; a toy run's points: "
                                                   "gaussian, ring8 or grid25); a run's comes from its checkpoint")
    s.add_argument("--set", action="append", default=None, metavar="data.KEY=VALUE",
                   help="data settings (repeatable): of the data to train the classifier on, or of an .npz's real "
                        "data, e.g. --set data.path=/images --set data.labels_from_subfolders=true")
    e = s.add_argument_group("evaluation")
    e.add_argument("--n", type=int, default=None, help="images to generate / first images of a .npz (default 10000)")
    e.add_argument("--metrics", default=None,
                   help=f"comma-separated subset of [{','.join(METRICS)}] or all (default: all that apply)")
    e.add_argument("--reference", choices=["test", "train"], default=None,
                   help="real split to compare with (default test; a dataset without one: train): all of it, or a "
                        "fixed random subset of n images when n is smaller")
    e.add_argument("--raw", action="store_true", default=None, help="use the raw generator instead of its EMA")
    e.add_argument("--no-record", action="store_true", default=None,
                   help="do not append the result to the run's metrics.jsonl (e.g. a folder you cannot write)")
    e.add_argument("--extractor", choices=["auto", "classifier", "inception"], default=None,
                   help="feature extractor (default auto: the project's classifier for grey images and for RGB data a "
                        f"classifier was trained on with '{TRAIN_CLASSIFIER}', else Inception-v3); Inception metrics: "
                        "fid, kid, inception_score")
    e.add_argument("--classifier", default=None, metavar="PATH",
                   help=f"weights (.safetensors, record beside it) written by '{TRAIN_CLASSIFIER}'; for an .npz its "
                        "record also names the real data")
    e.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="local FID Inception weights pt_inception-2015-12-05-6726825d.pth (default "
                        "$DCGAN_INCEPTION_WEIGHTS); needs pip install dcgan[inception]")
    t = s.add_argument_group(TRAIN_CLASSIFIER)
    t.add_argument("--epochs", type=int, default=None, help="training epochs (default 3)")
    t.add_argument("--out", default=None, help="weights file .safetensors (default: mnist: the package's dcgan/metrics/"
                                               "weights/mnist-classifier.safetensors; other data: <cache>/classifiers/"
                                               "DATASET-KEY.safetensors, where eval finds it)")
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
    cfg = Config()
    cfg.set("data.dataset", dataset, "DATASET")
    set_data_items(cfg, sets, "dcgan eval", fixed=("data.dataset", "data.split"),
                   example="data.path=..., data.labels_from_subfolders=true")
    cfg.validate()
    SOURCES.get(dataset)  # an unknown dataset: UserError naming the known ones
    return cfg.data


def cmd_eval(args) -> int:
    if args.target == TRAIN_CLASSIFIER:
        return _cmd_train_classifier(args)
    from .metrics.evaluate import evaluate, record_result, summary_line

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
    log = _log(args.quiet)
    with showing(not args.quiet):  # bars for generation and feature extraction on a terminal
        result = evaluate(args.target, n=10000 if args.n is None else args.n, metrics=args.metrics,
                          reference=args.reference, seed=args.seed or 0, dataset=args.dataset,
                          device=args.device or "auto", ema=not args.raw, batch_size=args.batch_size or 500,
                          data_dir=args.data_dir, extractor=args.extractor, inception_weights=args.inception_weights,
                          classifier=args.classifier, data=data, record=False, log=log)
    print(json.dumps(result), flush=True)  # first: a run folder that cannot be written must not cost the result
    print(summary_line(result), file=sys.stderr)
    if not args.no_record:
        record_result(result, log)
    return 0


def _log(quiet: bool):
    """The progress lines on stderr; --quiet: only the warnings among them."""
    def log(message: str) -> None:
        if not quiet or message.startswith("warning"):
            print(message, file=sys.stderr)

    return log


def _cmd_train_classifier(args) -> int:
    from .metrics.classifier import DEFAULT_BATCH, DEFAULT_EPOCHS, train_any_classifier, train_classifier, train_command

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
    extra = (f" --batch {args.batch_size}" if args.batch_size else "") + \
        "".join(f" --{name.replace('_', '-')} {getattr(args, name)}"
                for name in ("out", "train_images", "test_images") if getattr(args, name))
    data = _data_config(dataset, args.set)
    options = dict(epochs=epochs, seed=seed, out=args.out, batch=batch, device=args.device or "cpu",
                   data_dir=args.data_dir, command=train_command(data) + f" --epochs {epochs} --seed {seed}" + extra,
                   train_images=args.train_images, test_images=args.test_images,
                   log=_log(args.quiet))
    if dataset == "mnist" and not args.set:  # the shipped extractor (mnist-cnn-v1), as it was trained
        record = train_classifier(dataset, **options)
    else:
        record = train_any_classifier(data, **options)
    print(json.dumps(record))
    return 0
