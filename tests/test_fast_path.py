"""The training step's fast path: device-side skipping of non-finite steps, bf16 autocast,
channels_last and (on CUDA only) the whole iteration replayed from a CUDA graph.

The CPU tests run everywhere; the CUDA tests skip without a GPU and are run on one by hand:
    python -m pytest -q tests/test_fast_path.py
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from conftest import TINY, needs_mnist
from dcgan.cli import main
from dcgan.config import Config, ModelConfig
from dcgan.losses import LOSSES
from dcgan.models import build_discriminator, build_generator
from dcgan.training.ema import EMA
from dcgan.training.health import FiniteGuard, Health
from dcgan.training.steps import TrainStep

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SHAPE, K, Z = (1, 28, 28), 10, 16


def make(device="cpu", memory_format=torch.preserve_format, seed=0, **step_kwargs):
    """A tiny conditional DCGAN with guarded fused Adam, its Health and a TrainStep."""
    torch.manual_seed(seed)
    m = ModelConfig(z_dim=Z, g_width=8, d_width=8, g_fc=32, d_fc=32)
    G = build_generator(m, SHAPE, K).to(device, memory_format=memory_format)
    D = build_discriminator(m, SHAPE, K).to(device, memory_format=memory_format)
    adam = dict(lr=2e-4, betas=(0.5, 0.999), fused=True, capturable=step_kwargs.get("graphs", False))
    opt_g = FiniteGuard(torch.optim.Adam(G.parameters(), **adam))
    opt_d = FiniteGuard(torch.optim.Adam(D.parameters(), **adam))
    health = Health([opt_g, opt_d], [G, D], max_bad_steps=3, max_rollbacks=1)
    gen = torch.Generator(device).manual_seed(seed + 1)
    step = TrainStep(G, D, opt_g, opt_d, LOSSES.get("nonsaturating"), Config().loss, z_dim=Z, num_classes=K,
                     g_steps=1, gen=gen, health=health, **step_kwargs)
    return G, D, opt_g, opt_d, health, step


def batches(n, device="cpu", B=16, seed=5):
    g = torch.Generator().manual_seed(seed)
    return [((torch.rand(B, *SHAPE, generator=g) * 2 - 1).to(device), torch.randint(K, (B,), generator=g).to(device))
            for _ in range(n)]


def bn_buffers(m):
    return [b.clone() for name, b in m.named_buffers() if "running" in name]


def params(m):
    return [p.detach().clone() for p in m.parameters()]


def test_a_non_finite_batch_is_skipped_on_the_device_and_counted():
    G, D, opt_g, opt_d, health, step = make()
    data = batches(3)
    step(*data[0])
    before = (params(D), bn_buffers(G), bn_buffers(D))
    steps_before = [s["step"].clone() for s in opt_d.opt.state.values()]
    x, y = data[1]
    stats = step(x * float("nan"), y)  # a NaN real batch: D's gradients are NaN, G's (against D) are not
    assert opt_d.found_inf.item() == 1.0 and opt_g.found_inf.item() == 0.0
    after = (params(D), bn_buffers(G), bn_buffers(D))
    for a, b in zip(before, after):
        assert all(torch.equal(u, v) for u, v in zip(a, b))  # D's weights and all batch statistics untouched
    assert [s["step"] for s in opt_d.opt.state.values()] == steps_before  # Adam's step count too
    assert not torch.isfinite(stats[0])
    assert health.check() is False and health.skipped_total == 1
    step(*data[2])  # a good batch trains again
    assert not all(torch.equal(u, v) for u, v in zip(before[0], params(D)))
    assert health.check() is False and health.skipped_total == 1


def test_health_asks_for_a_rollback_after_max_bad_steps_in_a_row_even_between_checks():
    G, D, opt_g, opt_d, health, step = make()
    x, y = batches(1)[0]
    for _ in range(3):  # three bad steps in a row, then a good one, read only afterwards
        step(x * float("nan"), y)
    step(x, y)
    assert health.check() is True and health.skipped_total == 3
    assert health.check() is False  # the run of bad steps ended: nothing due any more


def test_two_bad_steps_then_a_good_one_do_not_ask_for_a_rollback():
    G, D, opt_g, opt_d, health, step = make()
    x, y = batches(1)[0]
    for bad in (True, True, False, True, True):
        step(x * float("nan") if bad else x, y)
    assert health.check() is False and health.skipped_total == 4


def test_eager_steps_are_deterministic_and_noise_follows_the_generator():
    runs = []
    for _ in range(2):
        G, D, *_rest, step = make()
        for x, y in batches(3):
            step(x, y)
        runs.append(params(G) + params(D))
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_bf16_autocast_trains_with_fp32_weights_and_stays_close_to_fp32():
    """The bf16 path (autocast on the CPU here): weights and Adam state stay fp32, the losses are
    finite and the first step's statistics agree with fp32 to bf16 precision."""
    G32, D32, *_r32, step32 = make()
    G16, D16, opt_g16, opt_d16, _h, step16 = make(dtype=torch.bfloat16)
    x, y = batches(1)[0]
    s32, s16 = step32(x, y), step16(x, y)
    assert torch.isfinite(s16).all()
    assert torch.allclose(s16, s32, atol=0.05, rtol=0.05)
    assert all(p.dtype == torch.float32 for p in (*G16.parameters(), *D16.parameters()))
    assert all(v.dtype == torch.float32 for st in opt_d16.opt.state.values() for k, v in st.items() if k != "step")
    moved = [not torch.equal(a, b) for a, b in zip(params(G32), params(G16))]
    assert any(moved)  # bf16 changes the arithmetic, so the weights differ slightly ...
    assert all(torch.allclose(a, b, atol=1e-3) for a, b in zip(params(G32), params(G16)))  # ... but only slightly


def test_channels_last_gives_the_same_training_step():
    G1, D1, *_r1, step1 = make()
    G2, D2, *_r2, step2 = make(memory_format=torch.channels_last, channels_last=True)
    assert any(p.is_contiguous(memory_format=torch.channels_last) and p.dim() == 4 and p.shape[2] > 1
               for p in D2.parameters())
    for x, y in batches(2):
        s1, s2 = step1(x, y), step2(x, y)
    assert torch.allclose(s1, s2, atol=1e-4)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(params(G1) + params(D1), params(G2) + params(D2)))


@needs_mnist
def test_training_in_bf16_on_cpu_runs_and_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    sets = [a for s in TINY + ["train.precision=bf16"] for a in ("--set", s)]
    assert main(["train", "mnist-cdcgan", "--steps", "6", "--device", "cpu", "--out", str(out), *sets]) == 0
    captured = capsys.readouterr()
    assert "bf16 autocast" in captured.err
    summary = json.loads(captured.out)
    assert summary["step"] == 6 and summary["skipped_steps"] == 0


# ---- CUDA: the graphed iteration ---------------------------------------------------------------

@cuda
def test_graphed_steps_match_eager_steps_from_the_same_state():
    """N graphed steps and N eager steps from one state agree within bf16 tolerance; batch-norm
    running statistics and the EMA move in both."""
    dev = "cuda"
    kw = dict(dtype=torch.bfloat16, memory_format=torch.channels_last, channels_last=True)
    G1, D1, *_a, eager = make(dev, **kw)
    G2, D2, *_b, graphed = make(dev, graphs=True, **kw)
    ema1, ema2 = EMA(G1, 0.9), EMA(G2, 0.9)
    bn0 = bn_buffers(D2)
    ema0 = params(ema2.model)
    for i, (x, y) in enumerate(batches(12, dev, B=32)):
        s1, s2 = eager(x, y), graphed(x, y)
        ema1.update(G1, i)
        ema2.update(G2, i)
    torch.cuda.synchronize()
    assert graphed._graph is not None and graphed.capture_s is not None  # it really replayed a graph
    assert torch.allclose(s1, s2, atol=0.05, rtol=0.05)
    for a, b in zip(params(G1) + params(D1), params(G2) + params(D2)):
        assert torch.allclose(a, b, atol=2e-2, rtol=2e-2)
    assert not all(torch.equal(a, b) for a, b in zip(bn0, bn_buffers(D2)))  # running statistics updated
    assert not all(torch.equal(a, b) for a, b in zip(ema0, params(ema2.model)))  # EMA updated


@cuda
def test_graphed_iteration_skips_a_nan_batch():
    G, D, opt_g, opt_d, health, step = make("cuda", graphs=True)
    data = batches(6, "cuda")
    for x, y in data[:5]:  # warm-up, capture, replay
        step(x, y)
    before = params(D)
    x, y = data[5]
    step(x * float("nan"), y)
    assert all(torch.equal(a, b) for a, b in zip(before, params(D)))
    assert health.check() is False and health.skipped_total == 1


@cuda
def test_an_eager_cuda_step_never_waits_for_the_device():
    G, D, opt_g, opt_d, health, step = make("cuda")
    data = batches(3, "cuda")
    step(*data[0])  # the first step creates the optimizer state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, y in data[1:]:
            step(x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda
@needs_mnist
def test_training_on_cuda_with_graphs_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    sets = [a for s in TINY for a in ("--set", s)]
    assert main(["train", "mnist-cdcgan", "--steps", "20", "--checkpoint-every", "10", "--device", "cuda",
                 "--out", str(out), *sets]) == 0
    assert "CUDA graph" in capsys.readouterr().err
    assert main(["train", str(out), "--resume", "--steps", "30", "--device", "cuda", *sets]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 30 and summary["skipped_steps"] == 0


def test_loading_a_non_fused_optimizer_state_keeps_the_guard_working():
    """A checkpoint written by another optimizer setting (e.g. an older run, or capturable=True on a
    GPU) loads into the guarded fused optimizer, which then still skips non-finite steps."""
    p = torch.nn.Parameter(torch.ones(3))
    plain = torch.optim.Adam([p], lr=0.1, capturable=False)
    p.grad = torch.ones(3)
    plain.step()
    state = copy.deepcopy(plain.state_dict())
    q = torch.nn.Parameter(p.detach().clone())
    guard = FiniteGuard(torch.optim.Adam([q], lr=0.1, fused=True))
    guard.load_state_dict(state)
    assert guard.param_groups[0]["fused"] is True and guard.opt.state[q]["step"].item() == 1
    q.grad = torch.tensor([1.0, float("nan"), 1.0])
    guard.step()
    assert torch.equal(q.detach(), p.detach()) and guard.found_inf.item() == 1.0
    q.grad = torch.ones(3)
    guard.step()
    assert not torch.equal(q.detach(), p.detach()) and guard.opt.state[q]["step"].item() == 2


@cuda
def test_a_failed_capture_warns_and_training_goes_on_eagerly():
    """A model with an operation that cannot be captured (a host sync in its forward): the step
    says so once and continues eagerly instead of stopping the run."""
    warnings = []
    G, D, opt_g, opt_d, health, step = make("cuda", graphs=True, warn=warnings.append)
    forward = D.forward
    D.forward = lambda x, y=None: forward(x, y) + 0 * float(x.sum().item())  # .item(): a sync, not capturable
    data = batches(6, "cuda")
    for x, y in data:
        stats = step(x, y)
    assert step.graphs is False and step._graph is None
    assert len(warnings) == 1 and "CUDA graph capture failed" in warnings[0]
    assert torch.isfinite(stats).all()
