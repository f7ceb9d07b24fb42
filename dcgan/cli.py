"""The `dcgan` command: parses arguments, builds a config, calls one library function.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 130/143 after a clean stop
on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from .errors import UserError
from .files import check_writable

DEFAULT_EVAL_KIMG = 50  # evaluation interval (thousand images) that --target-fid turns on


def cmd_presets(args) -> int:
    from .config import preset_names, read_preset

    names = preset_names()
    width = max(map(len, names))
    for name in names:
        raw = read_preset(name)
        print(f"{name:<{width}}  {raw.get('description', '')}  [{raw.get('source', '')}]")
    return 0


def cmd_train(args) -> int:
    from .config import resolve, steps_for_kimg
    from .training import train
    from .training.run import default_run_dir, preset_label

    if args.steps is not None and args.kimg is not None:
        raise UserError("--steps and --kimg both say how long to train; give one of them")
    if args.kimg is not None and not (args.kimg > 0 and math.isfinite(args.kimg)):
        raise UserError(f"--kimg must be a finite number > 0 (thousands of real images), got {args.kimg}")
    flags = {"train.steps": args.steps, "train.checkpoint_every": args.checkpoint_every,
             "train.seed": args.seed, "train.device": args.device, "eval.target_fid": args.target_fid,
             "train.batch": args.batch, "train.tick_every": args.tick_every, "data.path": args.data}
    sets = list(args.set or [])
    if args.target_fid and not any(s.startswith("eval.every_kimg") for s in sets):
        sets.append(f"eval.every_kimg={DEFAULT_EVAL_KIMG}")  # a target needs measurements
    cfg, name = resolve(args.preset, sets, flags)
    if args.kimg is not None:  # thousands of real images, whatever the batch: whole steps, rounded up
        cfg.set("train.steps", steps_for_kimg(args.kimg, cfg.train.batch), "--kimg")
        cfg.validate()
    if args.out:
        out = Path(args.out)
    elif Path(args.preset).is_dir():
        out = Path(args.preset)  # `dcgan train RUN --resume` continues that run
    elif args.resume:
        raise UserError("--resume needs the run: pass --out RUN, or give the run folder instead of the preset")
    else:
        out = default_run_dir(name)
    preset = preset_label(args.preset)  # recorded in the run (run.json, checkpoints) for the model card
    if args.dry_run:
        from .training.plan import describe

        print(describe(cfg, out, resume=args.resume, data_dir=args.data_dir, preset=preset), end="")
        return 0
    from .progress import TrainProgress

    # a bar on a terminal, else one line per tick (CI logs); --quiet: only the summary below
    progress = TrainProgress(quiet=args.quiet)
    summary = train(cfg, out, resume=args.resume, data_dir=args.data_dir, log=progress.log, progress=progress,
                    preset=preset)
    from .training.distributed import launched

    if launched().main:  # under torchrun, one summary (rank 0's, with every rank's weight digest)
        print(json.dumps(summary))
    return 0


def cmd_sample(args) -> int:
    from .progress import showing

    with showing(not args.quiet):  # a bar over the generated batches on a terminal
        return _cmd_sample(args)


def _cmd_sample(args) -> int:
    import numpy as np

    from . import load_generator  # a run, a checkpoint or an hf export
    from .data.raw import kind_of
    from .device import pick_device
    from .files import NpzWriter
    from .images import save_grid, save_image, sample_grid
    from .sampling import UNCONDITIONAL_LABELS, cycled, generate, generate_chunks, label_cycle, parse_labels

    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    if args.batch_size < 1:
        raise UserError(f"--batch must be >= 1, got {args.batch_size}")
    if args.nrow < 0:
        raise UserError(f"--nrow must be >= 1 (or 0 for automatic), got {args.nrow}")
    out = Path(args.out)
    if out.suffix not in (".png", ".npz"):
        raise UserError(f"--out {out}: the file must end in .png (a grid) or .npz (arrays)")
    check_writable(out)
    device = pick_device(args.device)
    G, info = load_generator(args.run, device=device)
    if args.labels is not None and not G.num_classes:  # 'all' too: the library reads it as None, a user means classes
        raise UserError(UNCONDITIONAL_LABELS)
    points = kind_of(G.out_shape) == "points"
    n = args.top_k_by_d if args.top_k_by_d is not None else args.n
    if out.suffix == ".png" and not points and n * int(np.prod(G.out_shape[1:])) > PNG_MAX_PIXELS:
        raise UserError(f"--n {n}: a grid of {n} images of {G.out_shape[1]}x{G.out_shape[2]} is more than one PNG "
                        f"holds ({PNG_MAX_PIXELS:,} pixels); write them to an .npz instead")
    kind = "points" if points else "images"
    dtype = np.float32 if points else np.uint8
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.top_k_by_d is not None:  # generate M, keep the K that D scores most real (best first)
        from .sampling import load_discriminator, top_k_by_d

        m = args.from_ or 4 * args.top_k_by_d
        D = load_discriminator(info["path"], device=next(G.parameters()).device)
        images, labels, _ = top_k_by_d(G, D, args.top_k_by_d, m, parse_labels(args.labels, m, G.num_classes),
                                       seed=args.seed, batch_size=args.batch_size)
        samples = images.numpy()
        if out.suffix == ".npz":
            with NpzWriter(out) as npz:
                npz.add(kind, samples.shape, dtype, [samples])
                if labels is not None:
                    npz.add("labels", labels.shape, np.int64, [labels.numpy()])
        elif args.nrow:
            save_grid(samples, out, nrow=args.nrow)
        else:  # best first within each class row
            save_image(sample_grid(samples, labels.numpy() if labels is not None else None), out)
    elif out.suffix == ".npz":  # any n: generated and written chunk by chunk
        cycle = label_cycle(args.labels, G.num_classes)
        shape = (n, *G.out_shape)
        need_disk(out, n * int(np.prod(G.out_shape)) * np.dtype(dtype).itemsize + (8 * n if cycle is not None else 0), n)
        with NpzWriter(out) as npz:
            chunks = generate_chunks(G, n, seed=args.seed, batch_size=args.batch_size, cycle=cycle)
            npz.add(kind, shape, dtype, (x.numpy() for x, _ in chunks))  # images uint8 (N, C, H, W) / points float32 (N, D)
            if cycle is not None:
                npz.add("labels", (n,), np.int64, (cycled(cycle, i, min(n, i + 65536)).numpy() for i in range(0, n, 65536)))
    else:
        labels = parse_labels(args.labels, n, G.num_classes)
        samples = generate(G, n, labels, seed=args.seed, batch_size=args.batch_size).numpy()
        if points:
            from .toy.plot import save_samples

            save_samples(out, samples, info["data"]["dataset"], title=f"{n} samples, step {info['step']}")
        elif args.nrow:
            save_grid(samples, out, nrow=args.nrow)
        else:  # one row per class (the orientation of every class grid), else square
            save_image(sample_grid(samples, labels.numpy() if labels is not None else None), out)
    print(json.dumps({"out": str(out), "n": n, "checkpoint": info["path"], "step": info["step"],
                      "generator": info["generator"]}))
    return 0


PNG_MAX_PIXELS = 1 << 28  # 268M pixels: the largest grid `dcgan sample` writes as one PNG


def need_disk(out: Path, nbytes: int, n: int) -> None:
    """Exit 2 before any work when the disk under `out` cannot hold `nbytes` (plus a little)."""
    import shutil

    free = shutil.disk_usage(out.parent).free
    if nbytes + (1 << 20) > free:
        raise UserError(f"--out {out}: {n:,} samples need {nbytes / 2**30:.1f} GiB on disk and {free / 2**30:.1f} GiB "
                        f"is free there; ask for fewer (--n) or write elsewhere")


def cmd_experiment(args) -> int:
    from .experiment import conditioning

    log = (lambda m: None) if args.quiet else None
    result = conditioning(args.out, steps=args.steps, seeds=args.seeds, sets=args.set or [], n_eval=args.n,
                          data_dir=args.data_dir, device=args.device, batch=args.batch_size, first_seed=args.seed, log=log)
    print(json.dumps(_sweep_summary(result, args.out)))
    return 0


def cmd_sweep(args) -> int:
    from .progress import showing
    from .sweep import sweep

    sets = list(args.set or []) + ([f"train.batch={args.batch_size}"] if args.batch_size is not None else [])
    log = (lambda m: None) if args.quiet else None
    with showing(not args.quiet):
        result = sweep(args.base, args.out, grid=args.grid or [], seeds=args.seeds, steps=args.steps, kimg=args.kimg,
                       n_eval=args.n, sets=sets, device=args.device, data_dir=args.data_dir, log=log,
                       first_seed=args.seed)
    print(json.dumps(_sweep_summary(result, args.out)))
    return 0


def _sweep_summary(result: dict, out: str) -> dict:
    """One line for the terminal: where the tables are and each variant's mean FID and recall."""
    return {"out": str(out), "table": str(Path(out) / "table.md"),
            "variants": {k: {m: v["mean"].get(m) for m in ("fid", "recall", "label_accuracy")}
                         for k, v in result["variants"].items()}}


def cmd_prepare(args) -> int:
    from .config import SUPPORTED_RESOLUTIONS, Config, set_data_items
    from .data.prepare import default_workers, prepare

    if args.resolution != 0 and args.resolution not in SUPPORTED_RESOLUTIONS:
        raise UserError(f"--resolution {args.resolution} is not supported; use 0 (native) or one of "
                        f"{list(SUPPORTED_RESOLUTIONS)}")
    cfg = Config()
    cfg.set("data.dataset", args.dataset, "prepare")
    cfg.set("data.split", args.split, "--split")
    cfg.set("data.resolution", args.resolution, "--resolution")
    set_data_items(cfg, args.set, "prepare", example="data.path=..., data.crop=108")
    cfg.validate()
    from .progress import showing

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: give at least 1 (default: one per CPU, {default_workers()})")
    with showing():  # bars over decoding and resizing on a terminal
        ds = prepare(cfg.data, args.data_dir, log=lambda m: print(m, file=sys.stderr), workers=args.workers)
    print(json.dumps({"dataset": args.dataset, "split": args.split, "n": len(ds), "shape": list(ds.shape),
                      "classes": ds.num_classes, "content_hash": ds.meta["content_hash"]}))
    return 0


def cmd_bench(args) -> int:
    from .bench import bench
    from .config import resolve

    batches = [None]
    if args.batch_size is not None:
        try:
            batches = [int(b) for b in args.batch_size.split(",")]
        except ValueError:
            raise UserError(f"--batch {args.batch_size!r}: expected a batch size or a list like 64,512,1024") from None
    if args.profile and len(batches) > 1:
        raise UserError("--profile writes one trace: give one --batch with it")
    if args.iters < 1 or args.warmup < 0 or args.windows < 1:
        raise UserError("--iters and --windows must be >= 1 and --warmup >= 0")
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr))
    for batch in batches:  # one process for the list: the data is prepared and the device set up once
        flags = {"train.batch": batch, "train.device": args.device, "train.precision": args.precision,
                 "train.channels_last": args.channels_last, "train.cuda_graphs": args.graphs,
                 "train.placement": args.placement, "train.compile": args.compile, "train.seed": args.seed}
        cfg, _ = resolve(args.preset, args.set or [], flags)
        result = bench(cfg, steps=args.iters, warmup=args.warmup, windows=args.windows, baseline=args.baseline,
                       profile=args.profile, data_dir=args.data_dir, log=log)
        print(json.dumps({"preset": args.preset, **result}), flush=True)
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    print(json.dumps(write_report(args.run, args.out)))
    return 0


def cmd_interpolate(args) -> int:
    from . import load_generator
    from .device import pick_device
    from .interpolate import interpolate, save_animation, save_strip

    out = Path(args.out)
    if out.suffix not in (".png", ".gif"):
        raise UserError(f"--out {out}: the file must end in .png (a strip) or .gif (an animation)")
    check_writable(out)
    if args.from_seed is None:
        raise UserError("--seed (the noise of the first frame, as in 'dcgan sample --seed') is required")
    if args.frames is not None and args.frames < 2:
        raise UserError(f"--frames must be >= 2 (the two ends), got {args.frames}")
    if args.scale < 1:
        raise UserError(f"--scale must be >= 1, got {args.scale}")
    if args.across_labels and (args.to_seed is not None or args.frames is not None):
        raise UserError("--across-labels keeps z fixed at --seed and shows one frame per class; "
                        "drop --to-seed / --frames")
    device = pick_device(args.device)
    G, info = load_generator(args.run, device=device)
    frames, labels = interpolate(G, args.from_seed, args.to_seed, args.frames or 10, label=args.label,
                                 across_labels=args.across_labels)
    (save_animation if out.suffix == ".gif" else save_strip)(frames.numpy(), out, scale=args.scale)
    print(json.dumps({"out": str(out), "frames": len(frames), "from_seed": args.from_seed, "to_seed": args.to_seed,
                      "labels": labels.tolist() if labels is not None else None, "checkpoint": info["path"],
                      "step": info["step"]}))
    return 0


def cmd_export(args) -> int:
    from .device import pick_device
    from .export import export

    check_writable(Path(args.out))
    device = pick_device(args.device)
    print(json.dumps(export(args.run, args.format, args.out, device=device, seed=args.seed)))
    return 0


# ---- the flags every command that runs a model shares: one spelling, one meaning ---------------------

DEVICE_HELP = ("auto | cpu | cuda | cuda:N (default auto: CUDA when there is one, else the CPU); a device that is "
               "not here is refused before any work")
DATA_DIR_HELP = "data root (default $DCGAN_DATA, else ~/.cache/dcgan)"
UNUSED_DATA_DIR_HELP = DATA_DIR_HELP + "; this command reads no data, so it only accepts it (the same flags work everywhere)"


def add_shared(s: argparse.ArgumentParser, *, device_default: str | None = "auto", device_note: str = "",
               seed: str | None = None, seed_default: int | None = None, data_dir: str = DATA_DIR_HELP,
               quiet: str | None = None, batch: str | None = None, batch_default: Any = None,
               batch_type: Any = int) -> None:
    """Add --device, --seed, --data-dir, --quiet and --batch to a command that runs a model, each with
    the same name and meaning everywhere: --device is checked by dcgan.device.pick_device (exit 2, one
    line; a None default leaves train.device to the configuration; `device_note` is added to its help),
    --batch is the batch size (dest batch_size). A None help: the command does not take that flag."""
    s.add_argument("--device", default=device_default, help=DEVICE_HELP + device_note)
    if seed is not None:
        s.add_argument("--seed", type=int, default=seed_default, help=seed)
    s.add_argument("--data-dir", help=data_dir)
    if quiet is not None:
        s.add_argument("--quiet", action="store_true", help=quiet)
    if batch is not None:
        s.add_argument("--batch", dest="batch_size", type=batch_type, default=batch_default, metavar="B", help=batch)


class Deprecated(argparse.Action):
    """An old spelling that still works: stores into the new flag's dest and says once, in one line
    on stderr, what to write instead (`new`) and why (`why`). Hidden from --help."""

    def __init__(self, option_strings, dest, new: str, why: str, **kwargs):
        kwargs.setdefault("default", argparse.SUPPRESS)  # the new flag's default stands
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.new, self.why = new, why

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"dcgan: warning: {option_string} is deprecated in '{parser.prog}'; use {self.new} ({self.why})",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def build_parser() -> argparse.ArgumentParser:
    from .version import __version__

    p = argparse.ArgumentParser(prog="dcgan", description="Train, sample and measure DCGAN models.")
    p.add_argument("--version", action="version", version=f"dcgan {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("presets", help="list the presets")
    s.set_defaults(func=cmd_presets)

    s = sub.add_parser("train", help="train a model from a preset, a TOML file or a run folder")
    s.add_argument("preset", metavar="PRESET_OR_TOML", help="preset name (see 'dcgan presets'), a .toml file or a run folder")
    s.add_argument("--out", help="run folder (default runs/<preset>-<time>)")
    s.add_argument("--steps", type=int, help="training steps: total discriminator updates (train.steps)")
    s.add_argument("--kimg", type=float, help="how long to train in thousands of real images instead of --steps: "
                                              "steps = ceil(kimg * 1000 / train.batch)")
    s.add_argument("--batch", type=int, help="batch size (train.batch)")
    s.add_argument("--data", metavar="DIR", help="the data to read, e.g. an image folder for folder-dcgan (data.path)")
    s.add_argument("--tick-every", type=int, metavar="N",
                   help="steps between a metrics line and a grid (train.tick_every; time-based progress lines come "
                        "every train.progress_seconds, 20, besides)")
    s.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (train.checkpoint_every; default 0: every "
                                                           "train.checkpoint_minutes, 10)")
    s.add_argument("--seed", type=int, help="random seed (train.seed)")
    s.add_argument("--device", help=DEVICE_HELP + " (train.device)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its newest complete checkpoint")
    s.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
    s.add_argument("--target-fid", type=float,
                   help=f"stop once the EMA generator's FID <= this (eval.target_fid; measures every "
                        f"{DEFAULT_EVAL_KIMG} kimg unless eval.every_kimg is set)")
    s.add_argument("--data-dir", help=DATA_DIR_HELP)
    s.add_argument("--quiet", action="store_true",
                   help="print only the final summary (otherwise a progress bar on a terminal, tick and progress lines "
                        "elsewhere)")
    s.add_argument("--dry-run", action="store_true",
                   help="print the resolved configuration and what the run costs (steps, images, checkpoint size on "
                        "disk, time when known) and exit without writing anything")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="generate images (or 2-D points of a toy run) from a run or checkpoint")
    s.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run folder (its newest checkpoint), a .ckpt file or an "
                                                             "hf export folder")
    s.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    s.add_argument("--labels", help="conditional models: all (cycle 0..K-1, default), K, or a,b,c")
    s.add_argument("--out", required=True, help="FILE.png (a grid; toy runs: a scatter plot) or FILE.npz (images uint8 "
                                                "NxCxHxW, toy runs: points float32 NxD [+ labels int64])")
    s.add_argument("--nrow", type=int, default=0, help="images per grid row (default: one row per class, else square)")
    add_shared(s, seed="noise seed (default 0): the same seed gives the same images on any batch size", seed_default=0,
               data_dir=UNUSED_DATA_DIR_HELP, quiet="no progress bar",
               batch="images generated at a time (default 500); the images do not depend on it", batch_default=500)
    s.add_argument("--batch-size", dest="batch_size", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # the old spelling, silent (eval's warns)
    s.add_argument("--top-k-by-d", type=int, metavar="K",
                   help="generate --from M images and keep the K that the run's D scores most real, best first "
                        "(K+1-class D: 1 - p(fake)); replaces --n")
    s.add_argument("--from", dest="from_", type=int, metavar="M", help="with --top-k-by-d: images to choose from (default 4K)")
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("experiment", help="train and compare several runs: conditioning (label at every layer vs input only)")
    s.add_argument("name", choices=["conditioning"], help="the experiment: conditioning (mnist-cdcgan with the label at "
                                                          "every layer or only at the input, of G and of D)")
    s.add_argument("--out", required=True, help="folder for the runs, table.md, table.json and grid.png")
    s.add_argument("--steps", type=int, help="training steps per run (train.steps; default the preset's)")
    s.add_argument("--seeds", type=int, default=3, help="seeds per variant (default 3): --seed, --seed + 1, ...")
    s.add_argument("--n", type=int, default=2000, help="images per evaluation (default 2000)")
    s.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
    add_shared(s, device_default=None, seed="the first seed (train.seed; default 0)", seed_default=0,
               quiet="print only the result (otherwise one line per run)", batch="batch size of every run (train.batch)")
    s.set_defaults(func=cmd_experiment)

    s = sub.add_parser("sweep", help="train every combination of a grid of config values over seeds, measure each, tabulate")
    s.add_argument("base", metavar="PRESET_OR_TOML", help="the configuration every run starts from")
    s.add_argument("--grid", action="append", metavar="SECTION.KEY=V1,V2",
                   help="values to try for one key (repeatable: every combination is trained); quote a value "
                        "with commas: train.augment=\"translation,cutout\",\"\"")
    s.add_argument("--seeds", type=int, default=3, help="seeds per combination (default 3): --seed, --seed + 1, ...")
    s.add_argument("--steps", type=int, help="training steps of every run")
    s.add_argument("--kimg", type=float, help="or: thousands of real images per run (steps = kimg * 1000 / train.batch)")
    s.add_argument("--n", type=int, default=10000, help="images per evaluation (default 10000)")
    s.add_argument("--out", required=True, help="folder of the runs, grids/, table.md and table.json")
    s.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="an override of every run (repeatable)")
    add_shared(s, device_default=None, device_note=" (train.device of every run, and its evaluation)",
               seed="the first seed (train.seed; default 0)", seed_default=0,
               quiet="print only the result (otherwise the runs' lines, labelled, and bars while measuring)",
               batch="batch size of every run (train.batch; the same as --set train.batch=B, a --grid of "
                     "train.batch overrides it)")
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("bench", help="measure training throughput of a preset (img/s, ms per step, TFLOP/s)")
    s.add_argument("preset", metavar="PRESET_OR_TOML", help="preset name or .toml file, as for train")
    s.add_argument("--iters", type=int, default=200, help="timed training iterations (default 200)")
    s.add_argument("--steps", dest="iters", type=int, action=Deprecated, new="--iters",
                   why="--steps means training steps in 'dcgan train'; here it counted timed iterations")
    s.add_argument("--warmup", type=int, default=20, help="untimed iterations first (default 20)")
    s.add_argument("--windows", type=int, default=5, help="timing windows; the median is reported (default 5)")
    add_shared(s, device_default=None, seed="random seed (train.seed)", quiet="print only the JSON result lines",
               batch="batch size (train.batch), or a list like 64,512,1024: one JSON line each", batch_type=str)
    # the fast path as training uses it on this device, unless overridden (each is a train.* key)
    s.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="autocast precision (default auto: bf16 on CUDA)")
    s.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format on CUDA (default on)")
    s.add_argument("--graphs", action=argparse.BooleanOptionalAction, default=None,
                   help="capture the iteration in a CUDA graph (default on, CUDA only)")
    s.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile G and D inside the step (train.compile; default off)")
    s.add_argument("--placement", choices=["auto", "device", "stream"],
                   help="training data in device memory or streamed from pinned host memory (default auto)")
    s.add_argument("--baseline", action="store_true",
                   help="also time the same model in a plain eager fp32 loop fed by a CPU DataLoader, and the ratio")
    s.add_argument("--profile", metavar="TRACE.json",
                   help="also profile 10 iterations: write their Chrome trace there and add where the time goes "
                        "(kernel launches per iteration, the top operators) to the result")
    s.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
    s.set_defaults(func=cmd_bench)

    from .eval_cli import add_parsers as add_metric_parsers

    add_metric_parsers(sub, add_shared, Deprecated)  # eval, eval train-classifier: the same shared flags

    s = sub.add_parser("prepare", help="build the canonical cache of a dataset (downloads when needed)")
    s.add_argument("dataset", help="a dataset name: mnist, fashion-mnist, cifar10, folder, ... (the presets' data.dataset)")
    s.add_argument("--split", default="train", help="train (default) or test")
    s.add_argument("--resolution", type=int, default=0, help="resize to this many pixels (default 0: native)")
    s.add_argument("--set", action="append", metavar="data.KEY=VALUE",
                   help="other data settings, e.g. data.path=DIR, data.crop=108, data.classes=[7]")
    s.add_argument("--data-dir", help=DATA_DIR_HELP)
    s.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes that decode an image folder (default: one per CPU)")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("report", help="write RUN/report.html: curves, grids, metrics, config (one self-contained file)")
    s.add_argument("run", metavar="RUN", help="a run folder")
    s.add_argument("--out", help="the HTML file (default RUN/report.html)")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("interpolate", help="slerp between the noises of two seeds (or through the classes) as a strip or GIF")
    s.add_argument("run", metavar="RUN_OR_CHECKPOINT_OR_EXPORT", help="a run folder, a .ckpt file or an hf export folder")
    s.add_argument("--seed", "--from-seed", dest="from_seed", type=int, metavar="S",
                   help="noise seed of the first frame: its image is 'dcgan sample --n 1 --seed S' (required)")
    s.add_argument("--to-seed", type=int, help="noise seed of the last frame")
    s.add_argument("--frames", type=int, help="frames, both ends included (default 10)")
    s.add_argument("--steps", dest="frames", type=int, action=Deprecated, new="--frames",
                   why="--steps means training steps in 'dcgan train'; here it counted frames")
    s.add_argument("--label", type=int, help="conditional models: the class of every frame (default 0)")
    s.add_argument("--across-labels", action="store_true",
                   help="conditional models: z of --seed fixed, one frame per class 0..K-1")
    s.add_argument("--scale", type=int, default=1, help="enlarge the pixels by this factor (default 1)")
    s.add_argument("--out", required=True, help="FILE.png (a strip) or FILE.gif (an animation)")
    add_shared(s, data_dir=UNUSED_DATA_DIR_HELP)
    s.set_defaults(func=cmd_interpolate)

    s = sub.add_parser("export", help="export the EMA generator: hf (safetensors + config + model card) or onnx")
    s.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run folder (its newest checkpoint) or a .ckpt file")
    s.add_argument("--format", required=True, choices=["hf", "onnx"],
                   help="hf: model.safetensors + config.json + README.md model card + sample.png; onnx: generator.onnx")
    s.add_argument("--out", required=True, help="output folder")
    add_shared(s, seed="noise seed of the hf export's sample.png (default 0)", seed_default=0,
               data_dir=UNUSED_DATA_DIR_HELP)
    s.set_defaults(func=cmd_export)
    return p


def entry() -> None:
    """The `dcgan` program (the console script and `python -m dcgan`): main(), then exit with its
    code; a torchrun worker leaves without finalizing the interpreter (training/distributed.py, leave)."""
    code = main()
    from .training.distributed import leave

    leave(code)


def one_line(text: str) -> str:
    """An error message as one line whatever it quotes (a file name or a value holding a line break):
    line breaks are shown escaped, as repr() shows them."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"dcgan: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dcgan: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`dcgan presets | head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        if e.filename is None:
            raise
        # a file the command reads or writes (a read-only folder, a full disk, a path through a file)
        print(one_line(f"dcgan: error: {e.filename}: {e.strerror or e}; check the path and its permissions"), file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - turn a training stop into its exit code
        from .training import Stopped
        from .training.health import TrainingDiverged

        if isinstance(e, Stopped):
            return e.exit_code
        if isinstance(e, TrainingDiverged):
            print(f"dcgan: error: {one_line(str(e))}", file=sys.stderr)
            return e.exit_code
        raise
