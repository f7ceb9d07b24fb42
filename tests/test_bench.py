"""`dcgan bench` on CPU with tiny widths: the report's fields and the FLOP count."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import needs_mnist
from dcgan.bench import flops_per_image
from dcgan.cli import main
from dcgan.config import Config, ModelConfig


def test_flop_count_of_a_linear_model_matches_hand_count():
    """An MLP toy model: count the matmul FLOPs of one training iteration by hand."""
    cfg = Config()
    cfg.model = ModelConfig(arch="mlp", z_dim=4, g_width=8, d_width=8, g_depth=0, d_depth=1)
    shape = (2,)
    fpi = flops_per_image(cfg, shape, 0, batch=8)
    # G: linear 4→2 (one layer). D: 2→8, 8→1. A matmul (n×k)(k×m) counts 2nkm FLOPs; backward twice forward.
    g_fwd = 2 * 4 * 2
    d_fwd = 2 * (2 * 8 + 8 * 1)
    # D step: G fwd, D fwd on real and fake, D bwd on both (weights + inputs: 2x fwd each; the first
    # layer skips the input gradient on real data but autograd still counts what it runs).
    # Rather than model autograd's exact choices, bound it: at least G fwd + 2 D fwd + the G step's D fwd + G bwd.
    assert fpi >= g_fwd + 3 * d_fwd
    assert fpi <= 3 * g_fwd + 9 * d_fwd + 2 * g_fwd


@needs_mnist
def test_bench_reports_every_field(capsys):
    rc = main(["bench", "mnist-cdcgan", "--device", "cpu", "--steps", "4", "--warmup", "1", "--windows", "2",
               "--baseline", "--set", "model.g_width=8", "--set", "model.d_width=8",
               "--set", "model.g_fc=32", "--set", "model.d_fc=32"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("img_per_s", "img_per_s_windows", "ms_per_d_step", "ms_per_g_step", "warmup_s", "capture_s",
                "flops_per_image", "achieved_tflops", "fraction_of_peak", "baseline_img_per_s", "speedup_vs_baseline"):
        assert key in out, key
    assert len(out["img_per_s_windows"]) == 2 and out["img_per_s"] > 0
    assert out["steps_timed"] == 4 and out["batch"] == 64
    assert out["achieved_tflops"] == pytest.approx(out["img_per_s"] * out["flops_per_image"] / 1e12)
    assert out["speedup_vs_baseline"] == pytest.approx(out["img_per_s"] / out["baseline_img_per_s"])


@needs_mnist
def test_bench_rejects_bad_numbers(capsys):
    assert main(["bench", "mnist-dcgan", "--device", "cpu", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err


@needs_mnist
def test_bench_profile_writes_a_trace_and_says_where_the_time_goes(tmp_path, capsys):
    trace = tmp_path / "trace.json"
    rc = main(["bench", "mnist-cdcgan", "--device", "cpu", "--steps", "2", "--warmup", "1", "--windows", "1",
               "--profile", str(trace), "--set", "model.g_width=8", "--set", "model.d_width=8",
               "--set", "model.g_fc=32", "--set", "model.d_fc=32"])
    assert rc == 0
    prof = json.loads(capsys.readouterr().out)["profile"]
    assert trace.is_file() and json.loads(trace.read_text())["traceEvents"]
    assert prof["iterations"] == 10 and prof["time"] == "cpu" and prof["ms_per_iteration"] > 0
    ops = [t["op"] for t in prof["top"]]
    assert any("conv" in op for op in ops)  # a DCGAN spends its time in convolutions
    assert 0 < sum(t["fraction"] for t in prof["top"]) <= 1.0 + 1e-9
