"""One self-contained HTML page about a run: `dcgan report RUN` writes RUN/report.html.

Everything is inside the file: images are data: URIs (PNG / GIF, base64), curves are inline SVG
drawn here (no JavaScript, no stylesheet, font or script from elsewhere), so the page can be
mailed, archived or opened offline. Sections, each present when the run has what it needs:

    summary       dataset, model, step, images seen, training time, last losses, best / last FID
    warnings      "kind": "warning" lines of metrics.jsonl (training health)
    losses        d_loss and g_loss vs step; D(x) and D(G(z)) vs step; img/s vs step
    evaluation    FID vs images seen and vs training seconds, other scalar metrics vs images seen
                  ("kind": "eval" lines); toy runs: their per-tick measures (D accuracy, modes ...)
    progress      an animated GIF of the tick grids (toy runs: their progress.gif) and every tick's
                  grid as a strip of thumbnails
    final grid    the last grid, rows labelled with the class names for conditional models
    config        config.toml as written by the run
    environment   dcgan / torch / Python versions, platform, device
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import platform
import re
import time
import tomllib
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import checkpoint
from .errors import UserError
from .files import atomic_write, read_metrics

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f")
THUMB_PX = 120  # height of a tick thumbnail in the strip (CSS pixels)
GIF_MS, GIF_LAST_MS = 300, 1500
MAX_GIF_FRAMES = 60  # a long run's animation keeps 60 evenly spaced ticks (the strip keeps them all)
_KNOWN_TRAIN_KEYS = {"kind", "step", "images_seen", "d_loss", "g_loss", "d_real", "d_fake", "img_per_s",
                     "elapsed_s", "time"}


# ---- reading the run ----------------------------------------------------------------------------

def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _scalars(record: dict[str, Any], skip: Iterable[str] = ()) -> dict[str, float]:
    """Numeric leaves of a record, nested dicts flattened one level (kid.mean, precision_recall.recall)."""
    out: dict[str, float] = {}
    for k, v in record.items():
        if k in skip:
            continue
        if isinstance(v, dict):
            for kk, vv in v.items():
                n = _number(vv)
                if n is not None and kk not in ("subsets", "subset_size", "k", "num_samples", "hit"):
                    out[f"{k}.{kk}"] = n
        else:
            n = _number(v)
            if n is not None:
                out[k] = n
    return out


def _interp(x: float, xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Piecewise-linear y(x) over increasing xs; None outside their range."""
    if not xs or x < xs[0] or x > xs[-1]:
        return None
    for i in range(1, len(xs)):
        if x <= xs[i]:
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def eval_points(evals: list[dict[str, Any]], train: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each eval line → {step, images_seen, seconds (of training), <scalar metrics>}. Lines written
    during training carry images_seen and elapsed_s (training seconds); lines of 'dcgan eval RUN'
    carry only the step (their elapsed_s is the evaluation's own duration), so images seen and
    seconds are read off the training lines at that step."""
    steps = [r["step"] for r in train if _number(r.get("step")) is not None]
    seen = [_number(r.get("images_seen")) for r in train if _number(r.get("step")) is not None]
    secs = [_number(r.get("elapsed_s")) for r in train if _number(r.get("step")) is not None]
    out = []
    for r in evals:
        flat = _scalars(r, ("kind", "time", "step", "images_seen", "elapsed_s", "protocol", "reference_cache", "eval_s"))
        s = _number(r.get("step"))
        img = _number(r.get("images_seen"))
        sec = _number(r.get("elapsed_s")) if img is not None else None
        if img is None and s is not None and None not in seen:
            img = _interp(s, steps, seen)
        if sec is None and s is not None and None not in secs:
            sec = _interp(s, steps, secs)
        out.append({"step": s, "images_seen": img, "seconds": sec, **flat})
    return out


# ---- SVG charts ---------------------------------------------------------------------------------

def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return ticks


def _tick_label(v: float) -> str:
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:.4g}"


def svg_chart(title: str, series: list[dict[str, Any]], xlabel: str, ylabel: str = "",
              width: int = 372, height: int = 250, xlim: tuple[float, float] | None = None) -> str:
    """An inline <svg> line chart. series: [{"name", "xs", "ys", "markers": bool}], non-finite or
    None values break the line."""
    left, right, top, bottom = 62, 14, 30, 42
    pw, ph = width - left - right, height - top - bottom
    pts = [(x, y) for s in series for x, y in zip(s["xs"], s["ys"]) if _number(x) is not None and _number(y) is not None]
    e = html.escape
    parts = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{e(title)}">',
             f'<text x="{left}" y="18" class="ct">{e(title)}</text>']
    if not pts:
        parts.append(f'<text x="{left + pw / 2}" y="{top + ph / 2}" text-anchor="middle" class="ax">no data</text></svg>')
        return "".join(parts)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    if xlim is not None:
        x0, x1 = min(x0, xlim[0]), max(x1, xlim[1])
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    else:
        pad = (y1 - y0) * 0.05
        y0, y1 = y0 - pad, y1 + pad

    def X(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def Y(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="pl"/>')
    for t in nice_ticks(y0, y1):
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" class="gr"/>'
                     f'<text x="{left - 5}" y="{Y(t) + 4:.1f}" text-anchor="end" class="ax">{_tick_label(t)}</text>')
    for t in nice_ticks(x0, x1, 6):
        parts.append(f'<line x1="{X(t):.1f}" x2="{X(t):.1f}" y1="{top}" y2="{top + ph}" class="gr"/>'
                     f'<text x="{X(t):.1f}" y="{top + ph + 15}" text-anchor="middle" class="ax">{_tick_label(t)}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" class="ax">{e(xlabel)}</text>')
    if ylabel:
        parts.append(f'<text transform="translate(13 {top + ph / 2}) rotate(-90)" text-anchor="middle" class="ax">'
                     f'{e(ylabel)}</text>')
    legend_x = left + pw
    for i, s in enumerate(reversed(series)):
        colour = s.get("colour") or COLOURS[(len(series) - 1 - i) % len(COLOURS)]
        w = 7 * len(s["name"]) + 22
        legend_x -= w
        parts.append(f'<line x1="{legend_x}" x2="{legend_x + 14}" y1="14" y2="14" stroke="{colour}" stroke-width="3"/>'
                     f'<text x="{legend_x + 18}" y="18" class="ax">{e(s["name"])}</text>')
    for i, s in enumerate(series):
        colour = s.get("colour") or COLOURS[i % len(COLOURS)]
        segment: list[str] = []
        segments = [segment]
        for x, y in zip(s["xs"], s["ys"]):
            if _number(x) is None or _number(y) is None:
                segment = []
                segments.append(segment)
                continue
            segment.append(f"{X(x):.1f},{Y(y):.1f}")
        for seg in segments:
            if len(seg) > 1:
                parts.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
            if s.get("markers") or len(seg) == 1:
                for p in seg:
                    cx, cy = p.split(",")
                    parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{colour}"/>')
    parts.append("</svg>")
    return "".join(parts)


# ---- pictures -----------------------------------------------------------------------------------

def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def grids_gif(frames: Sequence[Path], ms: int = GIF_MS, last_ms: int = GIF_LAST_MS) -> bytes | None:
    """An animated, looping GIF (bytes) of the grid PNGs, the last one held longer."""
    from PIL import Image

    if not frames:
        return None
    if len(frames) > MAX_GIF_FRAMES:  # evenly spaced, the first and the last always in
        frames = [frames[round(i * (len(frames) - 1) / (MAX_GIF_FRAMES - 1))] for i in range(MAX_GIF_FRAMES)]
    images = []
    for f in frames:
        with Image.open(f) as im:
            im.load()
            images.append(im.convert("L") if im.mode in ("L", "LA", "I", "1") else im.convert("RGB").quantize(256))
    buf = io.BytesIO()
    durations = [ms] * (len(images) - 1) + [last_ms]
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], loop=0, duration=durations,
                   optimize=False)
    return buf.getvalue()


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def labelled_grid(path: Path, class_names: Sequence[str], image_hw: tuple[int, int] | None, pad: int = 2,
                  scale: int = 2) -> bytes:
    """The last grid (one row per class), upscaled, with each row's class name at its left (PNG bytes)."""
    from PIL import Image, ImageDraw

    with Image.open(path) as im:
        grid = im.convert("RGB")
    rows = len(class_names)
    h = image_hw[0] if image_hw else (grid.height - pad) // rows - pad
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    font = _font(14)
    probe = ImageDraw.Draw(grid)
    names = [n if n == str(i) else f"{i}  {n}" for i, n in enumerate(class_names)]  # MNIST's names are the digits
    label_w = int(max(probe.textlength(n, font=font) for n in names)) + 16
    out = Image.new("RGB", (grid.width + label_w, grid.height), (255, 255, 255))
    out.paste(grid, (label_w, 0))
    draw = ImageDraw.Draw(out)
    for i, name in enumerate(names):
        centre = (pad + i * (h + pad) + h / 2) * scale
        draw.text((label_w - 8, centre), name, fill=(30, 30, 30), font=font, anchor="rm")
    return _png_bytes(out)


def _png_width(path: Path) -> int | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.width
    except OSError:
        return None


def _step_of(path: Path) -> int | None:
    m = re.search(r"step-(\d+)", path.name)
    return int(m.group(1)) if m else None


# ---- the page -----------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin:0 0 12px}
table.kv{border-collapse:collapse}table.kv td,table.kv th{padding:3px 12px 3px 0;text-align:left;vertical-align:top}
table.kv th{color:#555;font-weight:600;white-space:nowrap}
.charts{display:flex;flex-wrap:wrap;gap:12px}
svg.chart{background:#fff;border:1px solid #e3e3e3;border-radius:4px}
svg .ct{font-size:13px;font-weight:600;fill:#222}svg .ax{font-size:11px;fill:#555}
svg .pl{fill:#fff;stroke:#bbb}svg .gr{stroke:#eee}
.strip{display:flex;gap:8px;overflow-x:auto;padding:6px 0 10px}
.strip figure{margin:0;text-align:center;flex:none}.strip figcaption{font-size:11px;color:#666}
img.tick{height:%dpx;image-rendering:pixelated;border:1px solid #ddd;background:#000}
img.big{image-rendering:pixelated;border:1px solid #ddd;max-width:100%%}
.pics{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
table.ev{margin-top:10px;font-variant-numeric:tabular-nums}table.ev td{text-align:right}
details{margin:10px 0}summary{cursor:pointer;color:#444}
.warn{background:#fff4e5;border:1px solid #f0c36d;border-radius:4px;padding:8px 12px}
.warn li{margin:2px 0}
pre{background:#fff;border:1px solid #e3e3e3;border-radius:4px;padding:10px;overflow-x:auto;font-size:12px}
.muted{color:#777}
""" % THUMB_PX


def _kv_table(rows: Iterable[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
                   if v is not None and v != "")
    return f'<table class="kv">{body}</table>'


def _fmt_s(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _series(name: str, records: list[dict[str, Any]], x: str, y: str, **kw) -> dict[str, Any]:
    return {"name": name, "xs": [r.get(x) for r in records], "ys": [r.get(y) for r in records], **kw}


def build_report(run: str | Path) -> tuple[str, dict[str, Any]]:
    """The HTML text of a run's report and a summary {grids, charts, warnings, evals}."""
    from .version import __version__
    import torch

    run = Path(run)
    if not run.is_dir():
        raise UserError(f"{run} is not a folder; give a run folder (made by 'dcgan train')")
    has_cfg, has_metrics = (run / "config.toml").exists(), (run / "metrics.jsonl").exists()
    if not (has_cfg or has_metrics):
        raise UserError(f"{run} is not a run folder (no config.toml or metrics.jsonl); give the folder 'dcgan train' wrote")
    config_text = (run / "config.toml").read_text() if has_cfg else ""
    try:
        config = tomllib.loads(config_text) if config_text else {}
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{run / 'config.toml'} is not valid TOML ({e})") from None
    records = read_metrics(run / "metrics.jsonl")
    train = [r for r in records if r.get("kind", "train") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    warnings = [r for r in records if r.get("kind") == "warning"]
    found = checkpoint.latest(run)
    ckpt_path, state = found if found else (None, {})
    data = state.get("data", {}) if state else {}
    num_classes = int(data.get("num_classes") or 0)
    class_names = list(data.get("class_names") or [])
    if num_classes and len(class_names) != num_classes:
        class_names = [str(i) for i in range(num_classes)]
    cfg_model, cfg_data, cfg_train = config.get("model", {}), config.get("data", {}), config.get("train", {})
    grids = sorted((run / "grids").glob("step-*.png")) if (run / "grids").is_dir() else []
    e = html.escape
    out: list[str] = []
    n_charts = 0

    # -- summary
    last = train[-1] if train else {}
    fids = [(r.get("step"), _number(r.get("fid"))) for r in evals if _number(r.get("fid")) is not None]
    best = min(fids, key=lambda t: t[1]) if fids else None
    title = f"dcgan report: {run.resolve().name}"
    out.append(f"<h1>{e(title)}</h1>")
    out.append(f'<p class="sub">written {e(time.strftime("%Y-%m-%d %H:%M:%S %Z"))} by dcgan {e(__version__)}</p>')
    step = state.get("step") if state else last.get("step")
    summary_rows = [
        ("dataset", f"{cfg_data.get('dataset', data.get('dataset', '?'))} ({cfg_data.get('split', 'train')} split)"
                    + (f", shape {list(data['shape'])}" if data.get("shape") else "")
                    + (f", {num_classes} classes" if num_classes else "")),
        ("model", f"{cfg_model.get('arch', '?')}" + (" conditional" if cfg_model.get("conditional") else "")
                  + (f", z {cfg_model.get('z_dim')}" if "z_dim" in cfg_model else "")
                  + (f", G width {cfg_model.get('g_width')}, D width {cfg_model.get('d_width')}" if "g_width" in cfg_model else "")),
        ("loss", config.get("loss", {}).get("kind")),
        ("step", f"{step} of {cfg_train.get('steps', '?')}" if step is not None else None),
        ("images seen", f"{(state.get('images_seen') if state else None) or last.get('images_seen', 0):,}"),
        ("training time", _fmt_s((state.get("elapsed") if state else None) or last.get("elapsed_s"))),
        ("last tick", (f"d_loss {last['d_loss']:.3f}, g_loss {last['g_loss']:.3f}, D(x) {last['d_real']:.3f}, "
                       f"D(G(z)) {last['d_fake']:.3f}, {last['img_per_s']:.0f} img/s")
         if all(_number(last.get(k)) is not None for k in ("d_loss", "g_loss", "d_real", "d_fake", "img_per_s")) else None),
        ("FID", (f"last {fids[-1][1]:.3f} (step {fids[-1][0]}), best {best[1]:.3f} (step {best[0]})") if fids else None),
        ("checkpoint", ckpt_path.name if ckpt_path else "none readable"),
        ("warnings", str(len(warnings)) if warnings else "none"),
    ]
    out.append(_kv_table(summary_rows))

    # -- warnings
    if warnings:
        items = "".join(f"<li><b>step {e(str(w.get('step', '?')))}</b>: "
                        f"{e(str(w.get('message') or json.dumps({k: v for k, v in w.items() if k != 'kind'})))}</li>"
                        for w in warnings)
        out.append(f'<h2 id="warnings">Health warnings ({len(warnings)})</h2><div class="warn"><ul>{items}</ul></div>')

    # -- training curves
    if train:
        charts = [
            svg_chart("losses", [_series("d_loss", train, "step", "d_loss"), _series("g_loss", train, "step", "g_loss")],
                      "step", "loss"),
            svg_chart("discriminator outputs", [_series("D(x)", train, "step", "d_real"),
                                                _series("D(G(z))", train, "step", "d_fake")], "step", "mean sigmoid(D)"),
            svg_chart("throughput", [_series("img/s", train, "step", "img_per_s", colour=COLOURS[2])], "step", "images / s"),
        ]
        extra_keys = sorted({k for r in train for k, v in _scalars(r, _KNOWN_TRAIN_KEYS).items()})
        for k in extra_keys[:8]:  # e.g. the toy runs' D accuracy, modes covered, moment errors
            xs = [r.get("step") for r in train]
            ys = [_scalars(r).get(k) for r in train]
            if len({y for y in ys if y is not None}) <= 1:
                continue  # a constant (e.g. 0 skipped steps) says nothing a chart would add
            charts.append(svg_chart(k, [{"name": k, "xs": xs, "ys": ys, "colour": COLOURS[4]}], "step"))
        n_charts += len(charts)
        out.append('<h2 id="training">Training</h2><div class="charts">' + "".join(charts) + "</div>")

    # -- evaluation
    if evals:
        ev = eval_points(evals, train)
        max_seen = max([_number(r.get("images_seen")) or 0 for r in train] + [r["images_seen"] or 0 for r in ev])
        max_s = max([_number(r.get("elapsed_s")) or 0 for r in train] + [r["seconds"] or 0 for r in ev])
        charts = []
        if any("fid" in r for r in ev):
            def fid_series(x: str) -> list[dict[str, Any]]:
                return [{"name": "FID", "xs": [r[x] for r in ev], "ys": [r.get("fid") for r in ev],
                         "markers": True, "colour": COLOURS[4]}]

            charts.append(svg_chart("FID vs images seen", fid_series("images_seen"), "images seen", "FID",
                                    xlim=(0, max_seen) if max_seen else None))
            charts.append(svg_chart("FID vs training time", fid_series("seconds"), "seconds of training", "FID",
                                    xlim=(0, max_s) if max_s else None))
        groups: dict[str, list[str]] = {}
        for k in dict.fromkeys(k for r in ev for k in r):
            if k in ("step", "images_seen", "seconds", "fid", "eval_s") or k.startswith("classes.") or k.endswith(".std"):
                continue
            groups.setdefault(k.split(".")[0], []).append(k)
        for name, keys in list(groups.items())[:6]:  # kid, precision_recall, label_accuracy, ...
            series = [{"name": k.split(".", 1)[-1], "xs": [r["images_seen"] for r in ev],
                       "ys": [r.get(k) for r in ev], "markers": True} for k in keys]
            charts.append(svg_chart(name, series, "images seen", xlim=(0, max_seen) if max_seen else None))
        n_charts += len(charts)
        cols = [c for c in ("fid", "kid.mean", "precision_recall.precision", "precision_recall.recall",
                            "label_accuracy.accuracy", "classes.classes_covered") if any(c in r for r in ev)]
        head = "".join(f"<th>{e(c)}</th>" for c in ["step", "images seen", "seconds"] + cols)
        body = "".join("<tr>" + "".join(f"<td>{'' if r.get(c) is None else _tick_label(r[c]) if c != 'images_seen' else f'{r[c]:,.0f}'}</td>"
                                        for c in ["step", "images_seen", "seconds"] + cols) + "</tr>" for r in ev)
        proto = evals[-1].get("protocol")
        out.append(f'<h2 id="evaluation">Evaluation ({len(evals)} measurement{"s" if len(evals) != 1 else ""})</h2>'
                   f'<div class="charts">' + "".join(charts) + "</div>"
                   f'<table class="kv ev"><tr>{head}</tr>{body}</table>')
        if proto:
            out.append("<details><summary>Protocol of the newest measurement (numbers compare only under the same "
                       f"protocol)</summary><pre>{e(json.dumps(proto, indent=1))}</pre></details>")

    # -- samples: the final grid beside the animation, then every tick's grid as a strip
    n_grids = 0
    if grids:
        image_run = len(data.get("shape") or [1, 1, 1]) == 3
        final = grids[-1]
        class_grid = bool(num_classes and image_run)
        png, caption = final.read_bytes(), f"the last grid, step {_step_of(final)}"
        if class_grid:
            try:
                png = labelled_grid(final, class_names, tuple(data["shape"][1:]) if data.get("shape") else None)
                caption = f"step {_step_of(final)}: one row per class, the same noise in each column"
            except Exception:  # noqa: BLE001 - an odd grid still gets shown, unlabelled
                pass
        gif_path = run / "progress.gif"
        gif = gif_path.read_bytes() if gif_path.is_file() else grids_gif(grids)
        gif_w = _png_width(gif_path if gif_path.is_file() else final)
        if gif_w and gif_w < 460:
            gif_w = min(gif_w * 2, 460)  # small grids enlarged, pixels kept sharp
        gif_attr = f'width="{gif_w}" ' if gif_w else ""
        gif_note = ("fixed noise" + (", one row per class" if num_classes else "")) if image_run else \
            "generated and real points over D's decision surface"
        figures = []
        for g in grids:
            figures.append(f'<figure><img class="tick" alt="grid at step {_step_of(g)}" title="step {_step_of(g)}" '
                           f'src="{data_uri(g.read_bytes(), "image/png")}"><figcaption>step {_step_of(g)}</figcaption></figure>')
        n_grids = len(grids)
        out.append(f'<h2 id="samples">Samples: {"final class-by-class grid" if class_grid else "final picture"} '
                   f'and progress ({n_grids} ticks)</h2><div class="pics">'
                   f'<figure style="margin:0"><img class="big" id="final-grid" alt="final grid" '
                   f'src="{data_uri(png, "image/png")}"><figcaption class="muted">{e(caption)}</figcaption></figure>'
                   f'<figure style="margin:0"><img class="big" id="progress-gif" alt="animation of the grids" '
                   f'{gif_attr}src="{data_uri(gif, "image/gif")}"><figcaption class="muted">every tick\'s grid, animated '
                   f'({gif_note})</figcaption></figure></div>'
                   f'<div class="strip">{"".join(figures)}</div>')

    # -- config and environment
    if config_text:
        out.append(f'<h2 id="config">Configuration (config.toml)</h2><pre>{e(config_text)}</pre>')
    env = state.get("env") if isinstance(state.get("env"), dict) else {}
    device = env.get("device") or state.get("device") or cfg_train.get("device")
    env_rows = [("dcgan", __version__), ("torch", torch.__version__), ("python", platform.python_version()),
                ("platform", platform.platform()),
                ("device", f"{device} (train.device)" if device == cfg_train.get("device") and not env.get("device") else device)]
    env_rows += [(f"run: {k}", v) for k, v in env.items() if k != "device"]
    out.append(f'<h2 id="environment">Environment</h2>{_kv_table(env_rows)}'
               '<p class="muted">Versions are those of the machine that wrote this report; the device is the run\'s.</p>')

    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{e(title)}</title>"
            f"<link rel=\"icon\" href=\"data:,\"><style>{CSS}</style></head><body><main>\n"
            + "\n".join(out) + "\n</main></body></html>\n")
    return page, {"grids": n_grids, "charts": n_charts, "warnings": len(warnings), "evals": len(evals),
                  "checkpoint": str(ckpt_path) if ckpt_path else None}


def write_report(run: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Write the report (default RUN/report.html, atomically) → {"out", "bytes", "grids", ...}."""

    page, summary = build_report(run)
    path = Path(out) if out else Path(run) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = page.encode("utf-8")
    atomic_write(path, data)
    return {"out": str(path), "bytes": len(data), **summary}
