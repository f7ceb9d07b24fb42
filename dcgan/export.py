"""Exports of a run's generator: `dcgan export RUN --format hf|onnx --out DIR`.

hf    DIR/config.json        everything needed to rebuild the generator: the [model] section, the
                             data (shape, num_classes, class_names, dataset, content hash), the whole
                             resolved config, the run (preset, step, images seen, checkpoint), versions
      DIR/model.safetensors  the EMA generator's state dict (raw G when the run has no EMA),
                             batch-norm buffers included
      DIR/README.md          a model card: data, preset, the newest evaluation with its protocol
      DIR/sample.png         a sample grid (one row per class for conditional models), linked from the card
      → `dcgan.load_generator(DIR)` rebuilds G; its samples are bitwise those of the run's G.

onnx  DIR/generator.onnx     inputs z float32 [N, z_dim] (+ labels int64 [N] for conditional
                             models), output images float32 [N, C, H, W] in [-1, 1]; N is dynamic.
                             Checked against PyTorch with onnxruntime before the command succeeds
                             (needs `pip install dcgan[onnx]`).
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data.raw import kind_of
from .errors import UserError
from .files import newest_eval

EXPORT_FORMAT = "dcgan-generator"
EXPORT_VERSION = 1
FORMATS = ("hf", "onnx")
ONNX_ATOL = 1e-4  # largest |onnxruntime - torch| accepted, images in [-1, 1]


def is_export_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and (p / "model.safetensors").is_file()


def _preset_of(run_name: str) -> str | None:
    """The preset a default-named run folder (<preset>-YYYYmmdd-HHMMSS) was made from, if any."""
    from .config import preset_names

    names = sorted(preset_names(), key=len, reverse=True)
    return next((n for n in names if run_name == n or run_name.startswith(n + "-")), None)


def _run_folder(ckpt_path: Path) -> Path | None:
    run = ckpt_path.parent.parent
    return run if (run / "config.toml").exists() or (run / "metrics.jsonl").exists() else None


def _load_run(run: str | Path, device: str | torch.device = "cpu"):
    from .checkpoint import load_generator

    p = Path(run)
    if is_export_dir(p):
        raise UserError(f"{p} is already an export; give the run folder or checkpoint it came from")
    G, info = load_generator(p, device=device)
    return G, info


def _sample_grid(G: torch.nn.Module, path: Path, seed: int = 0) -> None:
    from .images import class_grid, save_grid, save_image
    from .sampling import generate

    K = G.num_classes
    labels = torch.arange(K).repeat_interleave(10) if K else None
    images = generate(G, K * 10 if K else 64, labels, seed=seed)
    if K:  # one row per class, 10 noises each
        save_image(class_grid(images.numpy(), labels.numpy()), path)
    else:
        save_grid(images.numpy(), path, nrow=8)


def _preset(run_dir: Path | None, payload: dict[str, Any]) -> str | None:
    """The preset (or TOML file) the run was made from, as recorded at its creation (run.json, then the
    checkpoint); for a run made before either existed, read off a default-named folder."""
    from .files import run_info

    recorded = (run_info(run_dir).get("preset") if run_dir else None) or payload.get("preset")
    return recorded or (_preset_of(run_dir.name) if run_dir else None)


def export_hf(run: str | Path, out: str | Path, device: str | torch.device = "cpu", seed: int = 0) -> dict[str, Any]:
    from safetensors.torch import save as safetensors_bytes

    from .version import __version__
    from .checkpoint import load as load_ckpt
    from .files import atomic_write

    G, info = _load_run(run, device)
    out = _out_dir(out)
    ckpt = Path(info["path"])
    run_dir = _run_folder(ckpt)
    cfg = info["config"].to_dict()
    payload = load_ckpt(ckpt)  # images_seen, elapsed, preset (checkpoint.py stays the only reader of the format)
    config = {
        "format": EXPORT_FORMAT, "format_version": EXPORT_VERSION,
        "model": cfg["model"],
        "data": {"shape": list(info["data"]["shape"]), "num_classes": info["data"]["num_classes"],
                 "class_names": list(info["data"].get("class_names") or []),
                 "dataset": info["data"].get("dataset"), "content_hash": info["data"].get("content_hash")},
        "z_dim": G.z_dim, "output_range": [-1.0, 1.0], "sample_seed": seed,
        "weights": info["generator"],  # "ema" or "raw"
        "run": {"name": run_dir.name if run_dir else None, "preset": _preset(run_dir, payload),
                "checkpoint": ckpt.name, "step": info["step"], "images_seen": payload.get("images_seen"),
                "elapsed_s": payload.get("elapsed")},
        "config": cfg,
        "versions": {"dcgan": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in G.state_dict().items()}
    # written like the other files (safetensors' own save_file makes the file 0600, unlike the rest)
    atomic_write(out / "model.safetensors", safetensors_bytes(tensors))
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    images = kind_of(tuple(G.out_shape)) == "images"
    if images:
        _sample_grid(G, out / "sample.png", seed)
    (out / "README.md").write_text(model_card(config, newest_eval(run_dir / "metrics.jsonl") if run_dir else None,
                                                has_sample=images))
    files = ["config.json", "model.safetensors", "README.md"] + (["sample.png"] if images else [])
    return {"format": "hf", "out": str(out), "files": files, "checkpoint": str(ckpt), "step": info["step"],
            "generator": info["generator"]}


def _out_dir(out: str | Path) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the export")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def model_card(config: dict[str, Any], evaluation: dict[str, Any] | None, has_sample: bool) -> str:
    data, run, m = config["data"], config["run"], config["model"]
    K = data["num_classes"]
    lines = [
        "---", "library_name: dcgan", "tags:", "- gan", "- dcgan", "- pytorch",
        *(["datasets:", f"- {data['dataset']}"] if data.get("dataset") else []), "---", "",
        f"# {run.get('name') or 'dcgan generator'}", "",
        f"A {'conditional ' if K else ''}DCGAN generator ({m['arch']}) trained with "
        f"the `dcgan` package on **{data.get('dataset')}**, exported by `dcgan export --format hf`.", "",
        "| | |", "|---|---|",
        f"| data | {data.get('dataset')}, shape {data['shape']}, {K or 'no'} classes |",
        f"| preset | {run.get('preset') or 'unknown (custom configuration)'} |",
        f"| training | step {run.get('step')}, {run.get('images_seen')} images seen |",
        f"| weights | {'EMA generator' if config['weights'] == 'ema' else 'raw generator (no EMA in the run)'}, `model.safetensors` |",
        f"| z | {config['z_dim']}-d standard normal |",
        f"| output | images in [-1, 1], (N, {', '.join(map(str, data['shape']))}) |", "",
    ]
    if K and data["class_names"] != [str(i) for i in range(K)]:
        lines += [f"Classes: {', '.join(f'{i} = {n}' for i, n in enumerate(data['class_names']))}.", ""]
    if has_sample:
        lines += ["## Samples", "", "![samples](sample.png)", "",
                  f"`sample.png`: seed {config.get('sample_seed', 0)}" + (", one row per class." if K else "."), ""]
    lines += ["## Metrics", ""]
    if evaluation:
        # "time" is when it was measured (seconds since 1970): a date, not a metric
        keep = {k: v for k, v in evaluation.items() if k not in ("protocol", "kind", "reference_cache", "time")}
        rows = []
        for k, v in keep.items():
            if isinstance(v, dict):
                for kk, vv in v.items():
                    if isinstance(vv, (int, float)) and not isinstance(vv, bool):
                        rows.append((f"{k}.{kk}", vv))
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                rows.append((k, v))
        when = evaluation.get("time")
        measured = (f", measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(when))}"
                    if isinstance(when, (int, float)) and not isinstance(when, bool) else "")
        lines += [f"The newest evaluation in the run's metrics.jsonl{measured}:", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in rows]
        lines += ["", "Protocol (numbers are comparable only under the same protocol):", "", "```json",
                  json.dumps(evaluation.get("protocol", {}), indent=1), "```", ""]
    else:
        lines += ["No evaluation in the run yet (`dcgan eval RUN` adds one).", ""]
    lines += [
        "## Use", "", "```python", "import torch", "import dcgan", "from dcgan.sampling import generate", "",
        "G, info = dcgan.load_generator('THIS_FOLDER')  # eval mode, CPU",
        f"images = generate(G, 16{', labels=torch.arange(16) % ' + str(K) if K else ''}, seed=0)  # uint8 (16, C, H, W)",
        "```", "",
        f"Exported with dcgan {config['versions']['dcgan']}, torch {config['versions']['torch']}, "
        f"Python {config['versions']['python']}.", "",
    ]
    return "\n".join(lines)


def load_export(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the generator of an `hf` export folder → (G in eval mode on `device`, info)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .config import Config, ModelConfig
    from .models import build_generator

    p = Path(path)
    try:
        config = json.loads((p / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{p / 'config.json'} is not readable JSON ({e}); export again with 'dcgan export'") from None
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise UserError(f"{p / 'config.json'} is not a dcgan export (no \"format\": \"{EXPORT_FORMAT}\")")
    if config.get("format_version") != EXPORT_VERSION:
        raise UserError(f"{p} has export format {config.get('format_version')}, this dcgan reads {EXPORT_VERSION}")
    model_cfg = Config.from_dict({"model": config["model"]}, where=str(p / "config.json")).model
    assert isinstance(model_cfg, ModelConfig)
    data = config["data"]
    G = build_generator(model_cfg, tuple(data["shape"]), data["num_classes"])
    try:
        state = load_file(str(p / "model.safetensors"))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{p / 'model.safetensors'} is damaged ({str(e).splitlines()[0]}); export again") from None
    try:
        G.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{p}: the weights do not fit model {model_cfg.arch!r} ({str(e).splitlines()[0]})") from None
    G.to(device).eval()
    full = Config.from_dict(config["config"], where=str(p / "config.json")) if "config" in config else \
        Config.from_dict({"model": config["model"]})
    info = {"path": str(p), "config": full, "data": data, "step": config.get("run", {}).get("step"),
            "generator": config.get("weights", "ema"), "export": config}
    return G, info


def export_onnx(run: str | Path, out: str | Path, check_batches: tuple[int, ...] = (1, 5)) -> dict[str, Any]:
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxruntime: pip install dcgan[onnx]") from None
    G, info = _load_run(run)
    out = _out_dir(out)
    K = G.num_classes

    class WithLabels(torch.nn.Module):
        def __init__(self, g):
            super().__init__()
            self.g = g

        def forward(self, z, labels):
            return self.g(z, labels)

    class NoLabels(torch.nn.Module):
        def __init__(self, g):
            super().__init__()
            self.g = g

        def forward(self, z):
            return self.g(z, None)

    module = (WithLabels(G) if K else NoLabels(G)).eval()
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))
    args = (z, torch.arange(2) % K) if K else (z,)
    names = ["z", "labels"] if K else ["z"]
    axes = {n: {0: "batch"} for n in names + ["images"]}
    path = out / "generator.onnx"
    tmp = out / ".generator.onnx.tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, args, str(tmp), input_names=names, output_names=["images"],
                              dynamic_axes=axes, dynamo=False)
        except Exception as e:  # noqa: BLE001 - report an exporter failure as one line
            tmp.unlink(missing_ok=True)
            raise UserError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    # check against PyTorch, at several batch sizes (the batch axis is dynamic)
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    worst = 0.0
    for n in check_batches:
        from .sampling import noise

        zc = noise(n, G.z_dim, 1234 + n)
        feed = {"z": zc.numpy()}
        yc = torch.arange(n) % K if K else None
        if K:
            feed["labels"] = yc.numpy().astype(np.int64)
        got = session.run(None, feed)[0]
        with torch.no_grad():
            want = G(zc, yc).numpy()
        if got.shape != want.shape:
            tmp.unlink(missing_ok=True)
            raise UserError(f"ONNX check failed: batch {n} gives shape {got.shape}, PyTorch {want.shape}")
        worst = max(worst, float(np.abs(got - want).max()))
    if worst > ONNX_ATOL:
        tmp.unlink(missing_ok=True)
        raise UserError(f"ONNX check failed: onnxruntime differs from PyTorch by {worst:.2e} (> {ONNX_ATOL})")
    tmp.replace(path)
    return {"format": "onnx", "out": str(out), "files": ["generator.onnx"], "inputs": names,
            "checkpoint": info["path"], "step": info["step"], "generator": info["generator"],
            "max_abs_diff": worst, "checked_batches": list(check_batches)}


def export(run: str | Path, fmt: str, out: str | Path, device: str | torch.device = "cpu", seed: int = 0) -> dict[str, Any]:
    """`device`: where the hf export's sample.png (noise `seed`) is generated; the ONNX model is traced
    and checked on the CPU, against the CPU onnxruntime."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose from [{', '.join(FORMATS)}]")
    return export_hf(run, out, device, seed) if fmt == "hf" else export_onnx(run, out)
