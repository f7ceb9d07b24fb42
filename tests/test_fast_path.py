"""The training step's fast path: device-side skipping of non-finite steps, bf16 autocast,
channels_last and (on CUDA only) the whole iteration replayed from a CUDA graph.

The CPU tests run everywhere; the CUDA tests skip without a GPU and are run on one by hand:
    python -m pytest -q tests/test_fast_path.py
"""

from __future__ import annotations

import contextlib
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
    # capturable: the optimizer's step count on the device, as a CUDA graph needs (the host stand-in does not)
    adam = dict(lr=2e-4, betas=(0.5, 0.999), fused=True, capturable=step_kwargs.get("graphs", False) and device == "cuda")
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


# ---- the graphed iteration without a GPU: a stand-in for CudaGraphs --------------------------------

class HostGraphs:
    """What TrainStep's graph backend does, on the host: capture records the iteration and runs
    nothing (as a CUDA capture runs no kernel), each replay re-runs it, reading the fixed buffers
    TrainStep filled. A replay bug that keeps an old batch, reuses noise, or stops updating
    after the warm-up shows here as a difference from the eager steps. fail: capture raises."""

    def __init__(self, fail: bool = False):
        self.fail, self.captures, self.replays, self.warmups = fail, 0, 0, 0

    @contextlib.contextmanager
    def warmup(self):
        self.warmups += 1
        yield

    def capture(self, fn):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.captures += 1

        def replay():
            self.replays += 1
            fn()
        return replay

    def synchronize(self):
        pass


def state_of(G, D, opt_g, opt_d, step):
    """Everything an iteration changes: weights, buffers, Adam moments and counts, the noise generator."""
    tensors = [*G.state_dict().values(), *D.state_dict().values()]
    for opt in (opt_g, opt_d):
        tensors += [v for st in opt.opt.state.values() for v in st.values()]
    return [t.detach().clone() for t in tensors] + [step.gen.get_state()]


def test_graphed_steps_on_the_host_stand_in_equal_eager_steps_bitwise():
    """12 steps, invalidate() after 6: warm-up, capture, replays, recapture. Replays read the batch
    and noise copied into the fixed buffers; the result is bitwise that of 12 eager steps."""
    G1, D1, og1, od1, _h1, eager = make()
    G2, D2, og2, od2, _h2, graphed = make(graphs=True, graph_backend=(host := HostGraphs()))
    returned = []
    for i, (x, y) in enumerate(batches(12)):
        if i == 6:
            graphed.invalidate()  # as after a resume or a rollback
        s1, s2 = eager(x, y), graphed(x, y)
        assert torch.equal(s1, s2), i
        returned.append(s2)
        assert all(torch.equal(a, b) for a, b in zip(state_of(G1, D1, og1, od1, eager), state_of(G2, D2, og2, od2, graphed))), i
    assert host.captures == graphed.captures == 2 and host.warmups == 6 and host.replays == 6  # the only check that invalidate() recaptured: a stale replay on the host reruns live code, same numbers
    assert returned[4] is returned[5] and returned[10] is returned[11]  # a replay overwrites one fixed output
    assert returned[5] is not returned[9]  # ... a new one after the recapture


def test_replays_see_each_new_batch_and_fresh_noise():
    """The same batch twice through the replay gives different statistics only through the noise;
    two different batches through the replay give what eager steps give for them."""
    G, D, *_r, graphed = make(graphs=True, graph_backend=HostGraphs())
    data = batches(6)
    for x, y in data[:4]:
        graphed(x, y)  # warm-up and capture
    x, y = data[4]
    first = graphed(x, y).clone()
    again = graphed(x, y).clone()
    assert not torch.equal(first, again)  # fresh noise (and moved weights) each replay
    assert graphed._static[0].data_ptr() != x.data_ptr() and torch.equal(graphed._static[0], x)


def test_each_replay_copies_the_batch_and_its_labels_and_draws_new_noise():
    """The fixed buffers as a replay reads them: this batch's images and labels, and noise drawn for this
    replay (the check above cannot tell new noise from moved weights, nor look at the labels)."""
    G, D, *_r, graphed = make(graphs=True, graph_backend=HostGraphs())
    data = batches(7)
    for x, y in data[:4]:
        graphed(x, y)  # warm-up and capture
    for x, y in data[4:]:
        z_before = graphed._static[2].clone()
        graphed(x, y)
        assert torch.equal(graphed._static[0], x) and torch.equal(graphed._static[1], y)
        assert not torch.equal(graphed._static[2], z_before)  # noise drawn for this replay


def test_a_failed_capture_on_the_host_warns_once_and_continues_exactly_as_eager():
    warnings = []
    G1, D1, og1, od1, _h1, eager = make()
    G2, D2, og2, od2, _h2, step = make(graphs=True, graph_backend=HostGraphs(fail=True), warn=warnings.append)
    for x, y in batches(7):
        assert torch.equal(eager(x, y), step(x, y))
    assert step.graphs is False and step.captures == 0
    assert len(warnings) == 1 and "CUDA graph capture failed" in warnings[0]
    assert all(torch.equal(a, b) for a, b in zip(state_of(G1, D1, og1, od1, eager), state_of(G2, D2, og2, od2, step)))


# ---- CUDA: the graphed iteration on a GPU ---------------------------------------------------------

@pytest.fixture
def deterministic_cudnn():
    """Deterministic cuDNN kernels (no autotuning) for the tests that compare two paths tightly."""
    old = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old


def max_difference(a_tensors, b_tensors) -> float:
    return max(float((a.double() - b.double()).abs().max()) for a, b in zip(a_tensors, b_tensors)
               if a.is_floating_point() and a.numel())


@cuda
@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_graphed_steps_match_eager_steps_on_cuda(deterministic_cudnn, dtype):
    """12 steps with an invalidate() after 6, graphed vs eager from one state in the same precision
    (bf16 graph against bf16 eager): equal to 1e-6. One step moves a weight by up to ~2e-4, so a
    replay on an old batch, on reused noise or without updates fails by orders of magnitude."""
    dev = "cuda"
    kw = dict(dtype=dtype, memory_format=torch.channels_last, channels_last=True)
    G1, D1, og1, od1, _h1, eager = make(dev, **kw)
    G2, D2, og2, od2, _h2, graphed = make(dev, graphs=True, **kw)
    ema1, ema2 = EMA(G1, 0.9), EMA(G2, 0.9)
    bn0, w0 = bn_buffers(D2), params(G2)
    for i, (x, y) in enumerate(batches(12, dev, B=32)):
        if i == 6:
            graphed.invalidate()
        s1, s2 = eager(x, y), graphed(x, y)
        ema1.update(G1, i)
        ema2.update(G2, i)
        assert max_difference([s1], [s2]) <= 1e-6, (i, s1, s2)
    torch.cuda.synchronize()
    assert graphed.captures == 2 and graphed.capture_s is not None  # it really captured (twice) and replayed
    diff = max_difference(state_of(G1, D1, og1, od1, eager)[:-1] + params(ema1.model),
                          state_of(G2, D2, og2, od2, graphed)[:-1] + params(ema2.model))
    moved = max_difference(w0, params(G2))
    print(f"graphed vs eager ({'bf16' if dtype else 'fp32'}): max difference {diff:.3g}; G moved up to {moved:.3g}")
    assert diff <= 1e-6 and moved > 1e-4
    assert torch.equal(eager.gen.get_state(), graphed.gen.get_state())  # the same noise draws, in the same order
    assert not all(torch.equal(a, b) for a, b in zip(bn0, bn_buffers(D2)))  # running statistics updated in the graph


@cuda
def test_graphed_iteration_skips_a_nan_batch():
    G, D, opt_g, opt_d, health, step = make("cuda", graphs=True)
    data = batches(6, "cuda")
    for x, y in data[:5]:  # warm-up, capture, replay
        step(x, y)
    assert step._replay is not None
    before = params(D)
    x, y = data[5]
    step(x * float("nan"), y)
    assert all(torch.equal(a, b) for a, b in zip(before, params(D)))
    assert health.check() is False and health.skipped_total == 1


@cuda
@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "graphed"])
def test_a_cuda_step_never_waits_for_the_device(graphs):
    G, D, opt_g, opt_d, health, step = make("cuda", graphs=graphs)
    data = batches(8, "cuda")
    for x, y in data[:5]:  # optimizer state, warm-up and capture
        step(x, y)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, y in data[5:]:
            step(x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda
@needs_mnist
def test_training_on_cuda_with_graphs_resumes_exactly(tmp_path, capsys):
    """train.deterministic=true keeps the graph: 20 steps + a resume to 30 (warm-up and capture again
    at step 20) equals 30 straight steps bitwise."""
    sets = [a for s in TINY + ["train.deterministic=true"] for a in ("--set", s)]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", "mnist-cdcgan", "--steps", "30", "--device", "cuda", "--out", str(straight), *sets]) == 0
    assert "CUDA graph" in capsys.readouterr().err
    assert main(["train", "mnist-cdcgan", "--steps", "20", "--device", "cuda", "--out", str(split), *sets]) == 0
    assert main(["train", str(split), "--resume", "--steps", "30", "--device", "cuda", *sets]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["step"] == 30 and summary["skipped_steps"] == 0
    from dcgan.checkpoint import latest

    a, b = latest(straight)[1], latest(split)[1]
    for which in ("G", "D", "G_ema"):
        for k, v in a["models"][which].items():
            assert torch.equal(v, b["models"][which][k]), (which, k)


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
    assert step.graphs is False and step._replay is None
    assert len(warnings) == 1 and "CUDA graph capture failed" in warnings[0]
    assert torch.isfinite(stats).all()


@needs_mnist
def test_train_compile_steps_through_compiled_wrappers_that_share_the_weights(tmp_path, capsys, monkeypatch):
    """train.compile=true: the step calls torch.compile wrappers of G and D (here with the aot_eager
    backend, which needs no C++ toolchain), one static graph per shape; they share the models' weights,
    so the run trains as the uncompiled one does and its checkpoint holds the plain state dicts."""
    real_compile, compiled = torch.compile, []

    def compile_aot_eager(module, **kwargs):
        compiled.append((type(module).__name__, kwargs))
        return real_compile(module, backend="aot_eager", **kwargs)

    sets = [a for s in TINY for a in ("--set", s)]
    plain, comp = tmp_path / "plain", tmp_path / "compiled"
    assert main(["train", "mnist-cdcgan", "--steps", "4", "--device", "cpu", "--out", str(plain), "--quiet", *sets]) == 0
    monkeypatch.setattr(torch, "compile", compile_aot_eager)
    assert main(["train", "mnist-cdcgan", "--steps", "4", "--device", "cpu", "--out", str(comp), *sets,
                 "--set", "train.compile=true"]) == 0
    assert "torch.compile" in capsys.readouterr().err
    assert compiled == [("Generator", {"dynamic": False}), ("Discriminator", {"dynamic": False})]
    from dcgan.checkpoint import latest

    a, b = latest(plain)[1]["models"], latest(comp)[1]["models"]
    for which in ("G", "D", "G_ema"):
        assert a[which].keys() == b[which].keys()  # no torch.compile prefixes in the checkpoint
        for k, v in a[which].items():
            assert torch.allclose(v.float(), b[which][k].float(), atol=1e-5), (which, k)
