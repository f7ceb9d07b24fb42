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
    """An MLP toy model: the matmul FLOPs of one training iteration (D step + one G step), counted
    by hand and matched exactly, so a layer too many or too few, a gradient nobody needs (D's
    weights in the G step) or a step left out of the count all fail."""
    cfg = Config()
    cfg.model = ModelConfig(arch="mlp", z_dim=4, g_width=8, d_width=8, g_depth=0, d_depth=1)
    shape = (2,)
    B = 8
    fpi = flops_per_image(cfg, shape, 0, batch=B)
    # G: one Linear 4→2 (g_depth=0). D: Linear 2→8, LeakyReLU, Linear 8→1. The counter counts
    # matmuls only: a Linear k→m on (B, k) is an addmm of 2·B·k·m FLOPs forward; backward it runs
    # one matmul for the weight's gradient (2·B·k·m) and one for the input's (2·B·k·m), each only
    # when that gradient is needed; bias gradients are sums (not counted). Per image (÷ B):
    g_lin = 2 * 4 * 2  # 16: G's one layer, one matmul
    d_1, d_2 = 2 * 2 * 8, 2 * 8 * 1  # 32 and 16: D's two layers, one matmul each
    # D step: fake = G(z) forward (z needs no gradient, fake is detached before D: no G backward);
    # D(x) and D(fake.detach()) forward; backward through both: weight gradients of both layers,
    # the input gradient of layer 2 only (neither x nor the detached fake needs one).
    d_step = g_lin + 2 * (d_1 + d_2) + 2 * (d_1 + d_2 + d_2)  # 16 + 96 + 128 = 240
    # G step: D(fake) forward with D's weights frozen (no weight gradients); backward: input
    # gradients of D's layer 2 and layer 1 (down to fake), then G's weight gradient (z needs none).
    g_step = (d_1 + d_2) + (d_2 + d_1) + g_lin  # 48 + 48 + 16 = 112
    assert d_step + g_step == 352
    assert fpi == d_step + g_step


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
