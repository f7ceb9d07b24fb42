"""Configuration: typed dataclasses, TOML presets holding only overrides, `--set` overrides.

A run's configuration is resolved in this order, later wins:
    defaults (the dataclasses below) → preset or TOML file → command-line flags / `--set key=value`.
The resolved configuration is written to the run folder (config.toml) and into every checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UserError

SUPPORTED_RESOLUTIONS = (28, 32, 64, 96, 128)


@dataclass
class DataConfig:
    dataset: str = "mnist"  # a registered source: mnist, fashion-mnist; 2-D points: gaussian, ring8, grid25
    split: str = "train"
    resolution: int = 0  # 0 = the source's native size; else resized (bilinear, antialiased)
    # image folders, CIFAR-10, CelebA, LSUN (dcgan/data/folder.py, cifar.py):
    path: str = ""  # the folder / file to read; "" = the source's place under the data root
    crop: int = 0  # centre crop (pixels, square) before resizing; 0 = the largest centred square
    channels: int = 0  # 1 or 3; 0 = from the data (3 if any image of a folder is colour)
    classes: list = field(default_factory=list)  # class filter, e.g. [7] (CIFAR horses); [] = all
    strict: bool = False  # image folders: fail on an unreadable file instead of skipping it
    labels_from_subfolders: bool = False  # image folders: one class per sub-folder


@dataclass
class ModelConfig:
    arch: str = "dcgan"
    conditional: bool = False  # True: G and D get the label; the number of classes comes from the data
    z_dim: int = 100
    g_width: int = 64  # G channels at its last hidden stage; doubled towards the start
    d_width: int = 64  # D channels at its first stage; doubled towards the end
    kernel: int = 4  # 4: k4 s2 p1 stages (the paper); 5: k5 s2 'same' stages (carpedm20 MNIST)
    g_fc: int = 0  # width of a hidden fully connected layer at G's input; 0 = none
    d_fc: int = 0  # width of a hidden fully connected layer before D's output; 0 = none
    g_cond: str = "all"  # where G sees the label: "input" (with z only) or "all" (every layer)
    d_cond: str = "all"  # where D sees the label: "input" (image only), "all" (every layer) or "projection"
    # (its features' inner product with a learned class embedding, added to the logit: Miyato & Koyama 2018)
    # spectral normalisation of D's conv, linear and embedding layers; each of D's batch norms then becomes a
    # learned offset per channel (as in SN-GAN: the weights are normalised instead of the activations, and
    # batch statistics no longer mix the real and the fake batch; the offset is the bias its layer lacks)
    spectral_norm: bool = False
    # arch "mlp" (any data shape; g_width / d_width are then the width of every hidden layer):
    g_depth: int = 3  # hidden layers of the mlp G; 0 = a single linear layer z → x (a linear generator)
    d_depth: int = 3  # hidden layers of the mlp D; 0 = a linear (logistic) discriminator
    # arch "simple" / "nelson" (dcgan/models/simple.py, nelson.py):
    dropout: float = 0.0  # dropout rate where the source model has dropout; 0 = none
    d_head: str = "binary"  # D's output: "binary" (one logit) or "classes" (K+1 logits: K classes + fake)


@dataclass
class LossConfig:
    kind: str = "nonsaturating"  # nonsaturating | hinge | lsgan | wgan-gp | nplus1 (dcgan/losses.py)
    real_label: float = 1.0  # < 1 gives one-sided label smoothing (0.9 is the usual value)
    gp_weight: float = 10.0  # wgan-gp: weight of the gradient penalty on real/fake interpolates
    r1_gamma: float = 0.0  # R1: (gamma / 2) * E[|grad_x D(x)|^2] on real images added to D's loss; 0 = off
    r1_every: int = 1  # lazy R1: the penalty every this many D steps, weighted by it (StyleGAN2's 16)


@dataclass
class OptimConfig:
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    g_steps: int = 1  # generator updates per discriminator update
    # the last fraction of the run (train.steps) over which both learning rates fall linearly to zero; 0 = constant
    lr_decay: float = 0.0


@dataclass
class TrainConfig:
    batch: int = 64
    steps: int = 5000  # discriminator updates
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    tick_every: int = 500  # steps between a metrics.jsonl line and a grid
    # steps between checkpoints; 0 = by time, every checkpoint_minutes of training (the default: a step
    # count that suits a CPU writes a checkpoint every second on a GPU). One is always written at the end.
    checkpoint_every: int = 0
    checkpoint_minutes: float = 10.0
    keep_checkpoints: int = 3
    ema_decay: float = 0.999  # 0 disables the EMA generator
    # the EMA's half-life in thousands of real images (StyleGAN2-ADA's ema_kimg): the per-step decay is
    # 0.5 ** (batch / (1000 * ema_kimg)), so the averaging horizon does not change with the batch; 0 = use ema_decay
    ema_kimg: float = 0.0
    # DiffAugment policies applied to real and fake images before D, a comma list of translation,
    # cutout, color ("" = none); differentiable, so G learns through them (Zhao et al. 2020)
    augment: str = ""
    # true: deterministic cuDNN kernels (no autotuning), so a CUDA run repeats bitwise, a resumed one
    # too (slower); false: cuDNN picks the fastest kernels. CPU runs are always bitwise repeatable.
    deterministic: bool = False
    num_threads: int = 0  # CPU threads for torch; 0 = torch's default
    max_bad_steps: int = 10  # consecutive steps with non-finite gradients (skipped) before a rollback
    max_rollbacks: int = 3  # rollbacks to the last good checkpoint before the run stops with an error
    rollback_lr_factor: float = 0.5  # learning rates are multiplied by this at each rollback
    tensorboard: bool = False  # also log scalars and grids to RUN/tensorboard/ (pip install dcgan[tensorboard])
    # where the training images live: device = all on the GPU (fastest), stream = pinned host memory,
    # batches copied ahead of use; auto = device when the dataset fits comfortably, else stream
    placement: str = "auto"
    prefetch: int = 4  # batches prepared ahead by the streamed loader
    sync_bn: bool = False  # multi-GPU: SyncBatchNorm instead of per-rank batch statistics
    # the fast path (CUDA only; the CPU path is always eager fp32): autocast precision for the models
    # (losses stay fp32), channels_last memory format, and one CUDA graph for the whole iteration
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    channels_last: bool = True
    cuda_graphs: bool = True
    # torch.compile G and D inside the training step (fuses batch norm, activations and casts into fewer
    # kernels); the first steps take longer while it compiles. Off by default
    compile: bool = False
    # seconds between the time-based progress lines (step, img/s, ETA) printed besides the tick lines; the
    # first comes after min(10, this) seconds. Read off the wall clock and the step counter only, so they cost
    # no device sync. 0 = tick lines only
    progress_seconds: float = 20.0


@dataclass
class EvalConfig:
    every_kimg: float = 0.0  # evaluate the EMA generator every this many thousand real images; 0 = never
    n: int = 2000  # generated images per evaluation (the reference uses as many real ones)
    reference: str = "test"  # real split the samples are compared with
    target_fid: float = 0.0  # stop training once FID <= this (needs every_kimg > 0); 0 = no target
    keep_best: bool = True  # keep checkpoints/best.ckpt, the checkpoint of the lowest FID so far


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # ---- conversion -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> "Config":
        cfg = cls()
        cfg.update(d, where)
        return cfg

    def update(self, d: dict[str, Any], where: str = "config") -> None:
        """Apply nested overrides {section: {key: value}}, checking names and types."""
        for section, values in d.items():
            if section not in SECTIONS:
                raise UserError(
                    f"{where}: unknown config section [{section}]; choose from [{', '.join(SECTIONS)}]"
                )
            if not isinstance(values, dict):
                raise UserError(f"{where}: [{section}] must be a table of key = value pairs")
            for key, value in values.items():
                self.set(f"{section}.{key}", value, where)

    def set(self, dotted: str, value: Any, where: str = "--set") -> None:
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or not key:
            raise UserError(
                f"{where}: unknown config key {dotted!r}; keys look like section.key with section "
                f"in [{', '.join(SECTIONS)}]"
            )
        obj = getattr(self, section)
        types = {f.name: f.type for f in dataclasses.fields(obj)}
        if key not in types:
            raise UserError(
                f"{where}: unknown config key {dotted!r}; [{section}] has [{', '.join(types)}]"
            )
        setattr(obj, key, _coerce(dotted, value, types[key], where))

    def validate(self) -> "Config":
        """Raise UserError for values no run can use."""
        m, o, t, lo = self.model, self.optim, self.train, self.loss
        checks = [
            (self.data.resolution == 0 or self.data.resolution in SUPPORTED_RESOLUTIONS,
             f"data.resolution={self.data.resolution} is not supported; use 0 (native) or one of "
             f"{list(SUPPORTED_RESOLUTIONS)}"),
            (m.z_dim >= 1, f"model.z_dim must be >= 1, got {m.z_dim}"),
            (m.g_width >= 1 and m.d_width >= 1, "model.g_width and model.d_width must be >= 1"),
            (m.kernel in (4, 5), f"model.kernel must be 4 or 5, got {m.kernel}"),
            (m.g_fc >= 0 and m.d_fc >= 0, "model.g_fc and model.d_fc must be >= 0 (0 = no hidden layer)"),
            (m.g_depth >= 0 and m.d_depth >= 0, "model.g_depth and model.d_depth must be >= 0 (0 = linear)"),
            (m.g_cond in ("input", "all"), f"model.g_cond must be 'input' or 'all', got {m.g_cond!r}"),
            (m.d_cond in ("input", "all", "projection"),
             f"model.d_cond must be 'input', 'all' or 'projection', got {m.d_cond!r}"),
            (m.d_cond != "projection" or m.d_head == "binary",
             "model.d_cond='projection' needs model.d_head='binary' (the projection adds to one logit)"),
            (0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1), got {m.dropout}"),
            (m.d_head in ("binary", "classes"), f"model.d_head must be 'binary' or 'classes', got {m.d_head!r}"),
            ((m.d_head == "classes") == (lo.kind == "nplus1"),
             "model.d_head='classes' and loss.kind='nplus1' go together (the K+1-class discriminator and its loss)"),
            (m.d_head == "binary" or m.conditional,
             "model.d_head='classes' needs model.conditional=true (real images are scored as their class)"),
            (self.data.crop >= 0, f"data.crop must be >= 0 (0 = largest centred square), got {self.data.crop}"),
            (self.data.channels in (0, 1, 3), f"data.channels must be 0 (from the data), 1 or 3, got {self.data.channels}"),
            (all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in self.data.classes),
             f"data.classes must be a list of class numbers >= 0, got {self.data.classes}"),
            (0.0 < lo.real_label <= 1.0, f"loss.real_label must be in (0, 1], got {lo.real_label}"),
            (o.lr_g > 0 and o.lr_d > 0, f"learning rates must be > 0, got lr_g={o.lr_g}, lr_d={o.lr_d}"),
            (0.0 <= o.beta1 < 1.0 and 0.0 <= o.beta2 < 1.0, "optim.beta1 and optim.beta2 must be in [0, 1)"),
            (o.g_steps >= 1, f"optim.g_steps must be >= 1, got {o.g_steps}"),
            (t.batch >= 1, f"train.batch must be >= 1, got {t.batch}"),
            (t.steps >= 1, f"train.steps must be >= 1 (a run that trains nothing is a mistake), got {t.steps}"),
            (t.tick_every >= 1, f"train.tick_every must be >= 1, got {t.tick_every}"),
            (t.checkpoint_every >= 0, f"train.checkpoint_every must be >= 1, or 0 for every train.checkpoint_minutes, "
                                      f"got {t.checkpoint_every}"),
            (t.checkpoint_minutes > 0, f"train.checkpoint_minutes must be > 0, got {t.checkpoint_minutes}"),
            (t.keep_checkpoints >= 2, f"train.keep_checkpoints must be >= 2, got {t.keep_checkpoints}"),
            (0.0 <= t.ema_decay < 1.0, f"train.ema_decay must be in [0, 1), got {t.ema_decay}"),
            (t.ema_kimg >= 0, f"train.ema_kimg must be >= 0 (0 = use train.ema_decay), got {t.ema_kimg}"),
            (all(p in AUGMENTS for p in augment_policies(t.augment)),
             f"train.augment={t.augment!r}: a comma list of {', '.join(AUGMENTS)} (or \"\" for none)"),
            (0.0 <= o.lr_decay <= 1.0, f"optim.lr_decay must be in [0, 1] (a fraction of the run), got {o.lr_decay}"),
            (lo.gp_weight >= 0, f"loss.gp_weight must be >= 0, got {lo.gp_weight}"),
            (lo.r1_gamma >= 0, f"loss.r1_gamma must be >= 0 (0 = no R1 penalty), got {lo.r1_gamma}"),
            (lo.r1_every >= 1, f"loss.r1_every must be >= 1, got {lo.r1_every}"),
            (t.num_threads >= 0, f"train.num_threads must be >= 0, got {t.num_threads}"),
            (t.max_bad_steps >= 1 and t.max_rollbacks >= 0, "train.max_bad_steps must be >= 1 and train.max_rollbacks >= 0"),
            (0.0 < t.rollback_lr_factor <= 1.0, f"train.rollback_lr_factor must be in (0, 1], got {t.rollback_lr_factor}"),
            (self.eval.every_kimg >= 0, f"eval.every_kimg must be >= 0, got {self.eval.every_kimg}"),
            (self.eval.n >= 10, f"eval.n must be >= 10, got {self.eval.n}"),
            (self.eval.reference in ("test", "train"), f"eval.reference must be test or train, got {self.eval.reference!r}"),
            (self.eval.target_fid >= 0, f"eval.target_fid must be >= 0, got {self.eval.target_fid}"),
            (self.eval.target_fid == 0 or self.eval.every_kimg > 0,
             "eval.target_fid needs eval.every_kimg > 0 (how often to measure), e.g. --set eval.every_kimg=50"),
            (t.placement in ("auto", "device", "stream"), f"train.placement must be auto, device or stream, got {t.placement!r}"),
            (t.prefetch >= 1, f"train.prefetch must be >= 1, got {t.prefetch}"),
            (t.precision in ("auto", "fp32", "bf16"), f"train.precision must be auto, fp32 or bf16, got {t.precision!r}"),
            (0 <= t.seed < 2**32, f"train.seed must be in [0, 2**32), got {t.seed}"),
            (t.progress_seconds >= 0, f"train.progress_seconds must be >= 0 (0 = tick lines only), got {t.progress_seconds}"),
            (re.fullmatch(r"auto|cpu|cuda(:\d+)?", t.device) is not None,
             f"train.device must be auto, cpu, cuda or cuda:N, got {t.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        return self


SECTIONS = [f.name for f in dataclasses.fields(Config)]

AUGMENTS = ("translation", "cutout", "color")  # the DiffAugment policies (dcgan/augment.py)


def augment_policies(spec: str) -> list[str]:
    """train.augment as a list: "translation,cutout" → ["translation", "cutout"]."""
    return [p.strip() for p in spec.split(",") if p.strip()]

# Keys that may change when a run is resumed; every other key must match the saved run.
RESUMABLE_CHANGES = {
    "eval.every_kimg", "eval.n", "eval.target_fid", "eval.keep_best",
    "train.max_bad_steps", "train.max_rollbacks", "train.rollback_lr_factor",
    "train.steps", "train.tick_every", "train.checkpoint_every", "train.checkpoint_minutes", "train.keep_checkpoints",
    "train.device", "train.num_threads", "train.tensorboard",
    "train.placement", "train.prefetch", "train.precision", "train.channels_last", "train.cuda_graphs", "train.compile",
    "train.deterministic",
    "train.progress_seconds",
}


def _coerce(dotted: str, value: Any, typ: Any, where: str) -> Any:
    name = typ if isinstance(typ, str) else typ.__name__
    if name == "bool":
        if isinstance(value, bool):
            return value
    elif name == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif name == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif name == "str":
        if isinstance(value, str):
            return value
    elif name == "list":
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]  # --set data.classes=7 means [7]
    else:  # pragma: no cover - a dataclass field of a type this function does not know
        raise TypeError(f"config field {dotted} has unsupported type {name}")
    raise UserError(f"{where}: {dotted} expects {_ARTICLE[name]}, got {value!r}")


_ARTICLE = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
            "list": "a list like [1, 2]"}


def parse_set(item: str) -> tuple[str, Any]:
    """Parse one `--set section.key=value`; the value is read as TOML, else taken as a string."""
    key, eq, raw = item.partition("=")
    if not eq or not key.strip():
        raise UserError(f"--set {item!r}: expected section.key=value, e.g. --set train.batch=128")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def set_data_items(cfg: "Config", items: list[str] | None, command: str, fixed: tuple[str, ...] = (),
                   example: str = "data.path=...") -> None:
    """Apply a command's `--set data.KEY=VALUE` items to cfg.data. Commands that are about one dataset
    take data.* keys only, and not the keys in `fixed` (those the command sets itself)."""
    for item in items or []:
        key, value = parse_set(item)
        if not key.startswith("data.") or key in fixed:
            but = f" other than {' and '.join(fixed)}" if fixed else ""
            raise UserError(f"--set {item!r}: {command} takes only data.* keys{but} (e.g. {example})")
        cfg.set(key, value)


def steps_for_kimg(kimg: float, batch: int, flag: str = "--kimg") -> int:
    """Training steps for `kimg` thousand real images at this batch: whole steps, rounded up (at least one).
    UserError for a budget that is not a finite number > 0 (inf, nan, or one no step count can hold)."""
    steps = kimg * 1000 / batch if isinstance(kimg, (int, float)) else math.nan
    if not (kimg > 0 and math.isfinite(steps)):
        raise UserError(f"{flag} must be a finite number > 0 (thousands of real images), got {kimg}")
    return max(1, math.ceil(steps))


# ---- presets ------------------------------------------------------------------------------------

PRESET_META_KEYS = ("description", "source")


def preset_names() -> list[str]:
    root = resources.files("dcgan") / "presets"
    return sorted(p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml"))


def read_preset(name: str) -> dict[str, Any]:
    """The raw TOML of a packaged preset (overrides plus description/source)."""
    path = resources.files("dcgan") / "presets" / f"{name}.toml"
    if not path.is_file():
        raise UserError(f"unknown preset {name!r}; choose from [{', '.join(preset_names())}]")
    return tomllib.loads(path.read_text())


def load_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except UnicodeDecodeError as e:  # TOML is UTF-8 text; a damaged or binary file is not
        raise UserError(f"{path} is not valid TOML: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                        f"{e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} is not valid TOML: {e}") from None


def resolve(preset_or_path: str, sets: list[str] = (), flags: dict[str, Any] | None = None) -> tuple[Config, str]:
    """Build a config from a preset name, a TOML file or a run folder, then overrides.

    Returns the config and a short name for the run (the preset's or the file's stem).
    """
    path = Path(preset_or_path)
    if path.is_dir():
        path = path / "config.toml"
        if not path.is_file():
            raise UserError(f"{preset_or_path} is a folder without config.toml; give a preset name or a TOML file")
        raw, name = load_toml(path), Path(preset_or_path).name
    elif preset_or_path.endswith(".toml"):
        raw, name = load_toml(path), path.stem
    else:
        raw, name = read_preset(preset_or_path), preset_or_path
    where = str(path) if path.suffix == ".toml" else f"preset {name}"
    cfg = Config.from_dict({k: v for k, v in raw.items() if k not in PRESET_META_KEYS}, where)
    for item in sets:
        key, value = parse_set(item)
        cfg.set(key, value)
    for key, value in (flags or {}).items():
        if value is not None:
            cfg.set(key, value, where=f"--{key.split('.')[-1].replace('_', '-')}")
    return cfg.validate(), name


def to_toml(d: dict[str, dict[str, Any]]) -> str:
    """Write a {section: {key: scalar}} dict as TOML (all a config holds)."""
    lines = []
    for section, values in d.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def diff(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = {f"{s}.{k}" for s in a for k in a[s]} | {f"{s}.{k}" for s in b for k in b[s]}
    out = []
    for dotted in sorted(keys):
        s, k = dotted.split(".", 1)
        if a.get(s, {}).get(k) != b.get(s, {}).get(k):
            out.append(dotted)
    return out
