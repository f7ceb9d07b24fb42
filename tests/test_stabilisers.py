"""The stabilisers, each checked against its math on a tiny case (a known gradient, a known penalty),
then all of them together through the training step of every image architecture, eager and through
the host stand-in of the CUDA graph (bitwise equal)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn as nn

from conftest import TINY, needs_mnist, wrap_training_batches
from dcgan.augment import PARAMS, augment, cutout, translation
from dcgan.cli import main
from dcgan.config import Config, ModelConfig, TrainConfig, resolve
from dcgan.errors import UserError
from dcgan.losses import LOSSES, gradient_penalty, r1_penalty
from dcgan.models import build_discriminator, build_generator
from dcgan.training.trainer import Trainer, ema_decay
from test_fast_path import HostGraphs, state_of

SETS = [a for s in TINY for a in ("--set", s)]


# ---- the penalties -----------------------------------------------------------------------------

def test_r1_of_a_linear_critic_is_gamma_half_the_squared_weight_norm_and_its_gradient_gamma_w():
    w = torch.tensor([3.0, -1.0, 2.0], requires_grad=True)
    x = torch.randn(5, 3, requires_grad=True)
    out = x @ w  # D(x) = w . x: grad_x D = w for every sample
    penalty = r1_penalty(out, x, gamma=0.5)
    assert penalty.item() == pytest.approx(0.25 * 14.0)  # (gamma / 2) * |w|^2
    (grad_w,) = torch.autograd.grad(penalty, w)
    assert torch.allclose(grad_w, 0.5 * w.detach())  # d/dw (gamma/2 |w|^2) = gamma w


def test_wgan_gp_of_a_quadratic_critic_on_known_interpolates():
    """D(x) = |x|^2 / 2 has grad_x D = x, so the penalty is weight * mean((|x_hat| - 1)^2)."""
    x_hat = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, 0.0]], requires_grad=True)  # norms 5, 1, 0
    out = 0.5 * x_hat.square().sum(1)
    assert gradient_penalty(out, x_hat, weight=10.0).item() == pytest.approx(10.0 * (16 + 0 + 1) / 3)


@pytest.mark.parametrize("kind,d,g", [
    ("lsgan", 0.5 * ((0.0 + 1.0) / 2 + (0.0 + 1.0) / 2), 0.5 * (1.0 + 0.0) / 2),
    ("wgan-gp", (0.0 + 1.0) / 2 - (1.0 + 0.0) / 2, -(0.0 + 1.0) / 2),
    ("hinge", (0.0 + 1.0) / 2 + (1.0 + 2.0) / 2, -(0.0 + 1.0) / 2),
])
def test_losses_on_known_scores(kind, d, g):
    """Real scores [1, 0], fake scores [0, 1], real_label 1: each loss's closed form."""
    real, fake = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    loss, cfg = LOSSES.get(kind), Config().loss
    assert loss.d(real, fake, cfg).item() == pytest.approx(d)
    assert loss.g(fake, cfg).item() == pytest.approx(g)


def test_lsgan_targets_the_real_label():
    cfg = Config().loss
    cfg.real_label = 0.9
    loss = LOSSES.get("lsgan")
    assert loss.d(torch.tensor([0.9]), torch.tensor([0.0]), cfg).item() == 0.0
    assert loss.g(torch.tensor([0.9]), cfg).item() == pytest.approx(0.0)


# ---- DiffAugment ---------------------------------------------------------------------------------

def test_translation_shifts_by_whole_pixels_and_fills_with_zero():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8) + 1
    # shift s = 1 for side 8; u picks floor(u * 3) - 1: u 0.9 → +1, u 0.0 → -1
    out = translation(x, ux=torch.tensor([0.9, 0.0]), uy=torch.tensor([0.5, 0.9]))
    assert torch.equal(out[0, 0, :, 1:], x[0, 0, :, :-1]) and (out[0, 0, :, 0] == 0).all()  # right by 1, no vertical
    assert torch.equal(out[1, 0, 1:, :-1], x[1, 0, :-1, 1:]) and (out[1, 0, 0] == 0).all() and (out[1, 0, :, -1] == 0).all()


def test_cutout_zeroes_one_square_of_half_the_side():
    x = torch.ones(3, 2, 8, 8)
    out = cutout(x, ux=torch.tensor([0.0, 0.99, 0.5]), uy=torch.tensor([0.0, 0.99, 0.25]))
    for i, (top, left) in enumerate([(0, 0), (4, 4), (1, 2)]):  # floor(u * (8 - 4 + 1))
        expected = torch.ones(8, 8)
        expected[top : top + 4, left : left + 4] = 0
        assert torch.equal(out[i, 0], expected) and torch.equal(out[i, 1], expected), i


def test_color_is_brightness_alone_at_neutral_saturation_and_contrast():
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    u = torch.full((2, PARAMS), 0.5)
    u[:, 4] = torch.tensor([0.7, 0.1])  # brightness + 0.2, - 0.4
    out = augment(x, u, ["color"])
    assert torch.allclose(out, x + torch.tensor([0.2, -0.4]).view(2, 1, 1, 1), atol=1e-6)


def test_augmentation_is_differentiable_through_the_kept_pixels():
    x = torch.rand(1, 1, 8, 8, requires_grad=True)
    u = torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.5, 0.5, 0.5]])  # no shift, cutout at the top left
    augment(x, u, ["translation", "cutout"]).sum().backward()
    expected = torch.ones(8, 8)
    expected[:4, :4] = 0
    assert torch.equal(x.grad[0, 0], expected)


# ---- spectral norm, projection -----------------------------------------------------------------

def test_spectral_norm_removes_batch_norm_and_normalises_each_layer_to_unit_spectral_norm():
    torch.manual_seed(0)  # the weights and their power iteration's start: the same in any test order
    m = ModelConfig(z_dim=8, g_width=8, d_width=8, d_fc=16, spectral_norm=True)
    D = build_discriminator(m, (1, 28, 28), 10)
    assert not [mod for mod in D.modules() if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d))]
    layers = [mod for mod in D.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    assert layers and all(hasattr(mod, "parametrizations") for mod in layers)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(10, (4,))
    for _ in range(500):  # one power iteration per forward in training mode (200 left 3.4e-3 for 1 of 15 seeds)
        D(x, y)
    for mod in layers:
        w = mod.weight.detach().flatten(1)  # the normalised weight, (out, in * k * k)
        assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=2e-3)


def test_spectral_norm_keeps_a_learned_offset_per_channel_where_batch_norm_was():
    """The layers before D's batch norms have no bias; spectral norm replaces each batch norm by a
    per-channel shift, so D keeps an offset there: shifting channel c of a feature map by v moves exactly
    that channel by v, for 2-D (N, C, H, W) and 1-D (N, C) features."""
    from dcgan.models import ChannelShift

    m = ModelConfig(z_dim=8, g_width=8, d_width=8, d_fc=16, kernel=5, spectral_norm=True)
    D = build_discriminator(m, (1, 28, 28), 10)
    shifts = [mod for mod in D.modules() if isinstance(mod, ChannelShift)]
    plain = build_discriminator(dataclasses.replace(m, spectral_norm=False), (1, 28, 28), 10)
    norms = [mod for mod in plain.modules() if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert [s.shift.numel() for s in shifts] == [b.num_features for b in norms] and shifts
    assert all(s.shift.requires_grad for s in shifts)
    for shape in [(2, 3, 4, 5), (2, 3)]:
        layer, x = ChannelShift(3), torch.randn(*shape)
        with torch.no_grad():
            layer.shift[1] = 0.75
        moved = layer(x) - x
        assert torch.allclose(moved[:, 1], torch.full_like(moved[:, 1], 0.75), atol=1e-6)  # (x + 0.75) - x rounds
        assert torch.equal(layer(x)[:, 0], x[:, 0]) and torch.equal(layer(x)[:, 2], x[:, 2])
    # and D's output depends on them (a shift that never reached the logit would train nothing)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(10, (4,))
    D.eval()
    before = D(x, y)
    with torch.no_grad():
        shifts[-1].shift += 1.0
    assert not torch.allclose(D(x, y), before)


def test_projection_adds_the_inner_product_of_the_class_embedding_and_the_last_features():
    """An MLP D with d_cond = "projection": D(x, y) = out(h) + <embed(y), h>; with the embedding of
    class 1 shifted by v, only D(x, 1) moves, by <v, h>."""
    torch.manual_seed(0)  # the draws below (weights, inputs) the same in any test order
    m = ModelConfig(arch="mlp", d_width=6, d_depth=2, d_cond="projection")
    D = build_discriminator(m, (2,), 3)
    x = torch.randn(5, 2)
    h = D.net[:-1](x)  # (5, 6): the last hidden features
    before = [D(x, torch.full((5,), k)) for k in range(3)]
    v = torch.randn(6)
    with torch.no_grad():
        D.embed.weight[1] += v
    after = [D(x, torch.full((5,), k)) for k in range(3)]
    assert torch.allclose(after[1] - before[1], h @ v, atol=1e-5)
    assert torch.equal(after[0], before[0]) and torch.equal(after[2], before[2])
    assert D.net[0].in_features == 2  # the label is projected, not concatenated to the input


# ---- the learning rate and the EMA horizon ----------------------------------------------------------

def test_ema_kimg_is_a_half_life_in_images_whatever_the_batch():
    t = TrainConfig(ema_kimg=10.0)
    for batch in (32, 64, 256):
        assert ema_decay(t, batch) ** (10_000 / batch) == pytest.approx(0.5)
    assert ema_decay(TrainConfig(ema_decay=0.99), 64) == 0.99


def tiny_trainer(*sets: str, arch_sets=(), shape=(1, 28, 28), classes=10) -> Trainer:
    cfg, _ = resolve("mnist-cdcgan", [*TINY, "train.batch=8", *arch_sets, *sets], {"train.device": "cpu"})
    return Trainer(cfg, shape, classes, torch.device("cpu"))


def test_lr_decay_falls_linearly_to_zero_over_the_last_fraction():
    torch.manual_seed(0)  # the draws below (weights, inputs) the same in any test order
    tr = tiny_trainer("train.steps=100", "optim.lr_decay=0.5")
    assert [tr.lr_factor(s) for s in (0, 49, 50, 75, 99, 100)] == [1.0, 1.0, 1.0, 0.5, 0.02, 0.0]
    tr.step = 75
    x, y = torch.rand(8, 1, 28, 28) * 2 - 1, torch.randint(10, (8,))
    tr.train_step(x, y)
    assert float(tr.opt_g.param_groups[0]["lr"]) == pytest.approx(0.5 * tr.cfg.optim.lr_g)
    assert float(tr.opt_d.param_groups[0]["lr"]) == pytest.approx(0.5 * tr.cfg.optim.lr_d)


# ---- all of them in the training step -----------------------------------------------------------

ALL = ["model.spectral_norm=true", "model.d_cond=projection", "loss.r1_gamma=0.1", "loss.r1_every=3",
       "train.augment=translation,cutout,color", "optim.lr_decay=0.5", "train.ema_kimg=1", "train.steps=12"]
ARCHS = {
    "dcgan": ((), (1, 28, 28)),
    "simple": (("model.arch=simple", "model.d_fc=0", "model.g_fc=0"), (1, 32, 32)),
    "nelson": (("model.arch=nelson",), (1, 28, 28)),
    "anime": (("model.arch=anime", "model.g_width=4", "model.d_width=4"), (3, 48, 48)),
}


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("loss", ["nonsaturating", "wgan-gp", "lsgan"])
def test_every_stabiliser_at_once_trains_every_architecture_and_replays_bitwise(arch, loss):
    """All stabilisers on, 8 steps eager and 8 through the host stand-in of the CUDA graph (lazy R1:
    two graphs): finite, and bitwise the same (the random numbers are drawn outside the graph)."""
    arch_sets, shape = ARCHS[arch]
    runs = []
    for backend in (None, HostGraphs()):
        torch.manual_seed(0)
        tr = tiny_trainer(*ALL, f"loss.kind={loss}", arch_sets=arch_sets, shape=shape)
        if backend is not None:  # one eager warm-up step of each kind, so both kinds get captured in 8 steps
            tr.step_fn.graphs, tr.step_fn._backend, tr.step_fn.warmup = True, backend, 1
            tr.step_fn.invalidate()
        g = torch.Generator().manual_seed(1)
        for _ in range(8):
            x = torch.rand(8, *shape, generator=g) * 2 - 1
            assert tr.train_step(x, torch.randint(10, (8,), generator=g))
        assert torch.isfinite(tr.tick_sums).all()
        runs.append(state_of(tr.G, tr.D, tr.opt_g, tr.opt_d, tr.step_fn))
        if backend is not None:
            assert backend.captures == 2 and tr.step_fn.captures == 2  # with and without R1
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_r1_steps_follow_the_lazy_interval_and_add_the_weighted_penalty():
    tr = tiny_trainer("loss.r1_gamma=2", "loss.r1_every=4")
    assert [tr.step_fn.r1_due(s) for s in range(9)] == [True, False, False, False, True, False, False, False, True]
    off = tiny_trainer("loss.r1_gamma=0")
    assert not any(off.step_fn.r1_due(s) for s in range(9))


def test_augment_refuses_point_data():
    with pytest.raises(UserError, match="holds points"):
        cfg, _ = resolve("toy-ring8", ["train.augment=translation"], {"train.device": "cpu"})
        Trainer(cfg, (2,), 0, torch.device("cpu"))


@pytest.mark.parametrize("item,word", [("train.augment=rotate", "train.augment"), ("loss.r1_every=0", "r1_every"),
                                       ("optim.lr_decay=1.5", "lr_decay"), ("loss.gp_weight=-1", "gp_weight"),
                                       ("train.ema_kimg=-2", "ema_kimg"), ("model.d_cond=proj", "d_cond")])
def test_bad_stabiliser_values_are_exit_2(item, word, capsys):
    assert main(["train", "mnist-cdcgan", "--steps", "1", "--device", "cpu", "--set", item]) == 2
    assert word in capsys.readouterr().err


@needs_mnist
def test_a_run_with_stabilisers_resumes_exactly(tmp_path, capsys, monkeypatch):
    """Lazy R1, DiffAugment and lr decay draw and schedule from the step: a run stopped after its
    checkpoint at step 6 and resumed to 12 equals 12 steps, bitwise. (The stop is a crash, not a
    shorter --steps: with optim.lr_decay the schedule follows train.steps.)"""
    sets = [a for s in ALL + ["train.tick_every=4"] for a in ("--set", s)]
    base = ["train", "mnist-cdcgan", "--device", "cpu", "--quiet", "--steps", "12", "--checkpoint-every", "6", *SETS, *sets]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0

    def crash(step, x, y):
        if step == 7:
            raise RuntimeError("power cut")
        return x, y

    wrap_training_batches(monkeypatch, crash)
    with pytest.raises(RuntimeError, match="power cut"):
        main([*base, "--out", str(tmp_path / "b")])
    monkeypatch.undo()
    assert main([*base, "--out", str(tmp_path / "b"), "--resume"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["step"] == 12 and math.isfinite(summary["elapsed_s"])
    from dcgan.checkpoint import latest

    a, b = latest(tmp_path / "a")[1], latest(tmp_path / "b")[1]
    for which in ("G", "D", "G_ema"):
        for k, v in a["models"][which].items():
            assert torch.equal(v, b["models"][which][k]), (which, k)


def test_d_step_adds_r1_weighted_by_the_lazy_interval():
    """A linear critic on 2-D points, D(x) = w . x + b: the lazy R1 step's loss is the plain loss plus
    (gamma * r1_every / 2) |w|^2."""
    torch.manual_seed(0)  # the draws below (weights, inputs) the same in any test order
    from dcgan.training.steps import d_step

    m = ModelConfig(arch="mlp", z_dim=3, g_width=4, g_depth=1, d_depth=0)
    G, D = build_generator(m, (2,), 0), build_discriminator(m, (2,), 0)
    w = D.net[0].weight.detach().clone()  # (1, 2)
    cfg = Config().loss
    cfg.r1_gamma, cfg.r1_every = 0.3, 4
    x, z = torch.randn(6, 2), torch.randn(6, 3)
    losses = []
    for r1 in (False, True):
        opt = torch.optim.SGD(D.parameters(), lr=0.0)  # nothing moves: the two losses see the same D
        _, d_loss, *_ = d_step(G, D, opt, LOSSES.get("nonsaturating"), cfg, x, None, z, None, r1=r1)
        losses.append(d_loss.item())
    assert losses[1] - losses[0] == pytest.approx(0.3 * 4 / 2 * w.square().sum().item(), rel=1e-5)


def test_d_sees_every_batch_through_the_augmentation_drawn_for_it():
    """With train.augment, the three batches D sees in one iteration (real, fake, the G step's fake)
    are each augment(batch, u_i) with the numbers drawn for them, in the documented order."""
    tr = tiny_trainer("train.augment=translation,cutout,color")
    seen = []
    tr.D.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    fakes = []
    tr.G.register_forward_hook(lambda mod, args, out: fakes.append(out.detach().clone()))
    state = tr.gen.get_state()
    x, y = torch.rand(8, 1, 28, 28) * 2 - 1, torch.randint(10, (8,))
    tr.train_step(x, y)
    replay = torch.Generator().set_state(state)  # the same draws again: z, fake labels, then u
    torch.randn(8, tr.cfg.model.z_dim, generator=replay)
    torch.randint(10, (8,), generator=replay)
    u = torch.rand(3, 8, PARAMS, generator=replay)
    policies = ["translation", "cutout", "color"]
    assert len(seen) == 3
    assert torch.equal(seen[0], augment(x, u[0], policies))
    assert torch.equal(seen[1], augment(fakes[0], u[1], policies))
    assert torch.equal(seen[2], augment(fakes[0], u[2], policies))


# ---- on a GPU: the fast path with every stabiliser ------------------------------------------------

from test_fast_path import cuda, deterministic_cudnn, max_difference  # noqa: E402,F401  (a fixture, a mark)


@cuda
def test_every_stabiliser_on_the_cuda_fast_path_replays_exactly_and_never_waits(deterministic_cudnn):
    """bf16, channels_last, lazy R1 in its own graph, DiffAugment, lr decay, spectral norm, projection:
    12 graphed steps equal 12 eager ones (to 1e-6), and a replayed step never synchronises."""
    states = []
    for graphs in (False, True):
        torch.manual_seed(0)
        cfg, _ = resolve("mnist-cdcgan", [*TINY, "train.batch=32", *ALL, f"train.cuda_graphs={str(graphs).lower()}"],
                         {"train.device": "cuda"})
        tr = Trainer(cfg, (1, 28, 28), 10, torch.device("cuda"))
        g = torch.Generator().manual_seed(1)
        for _ in range(12):
            x = (torch.rand(32, 1, 28, 28, generator=g) * 2 - 1).cuda()
            assert tr.train_step(x, torch.randint(10, (32,), generator=g).cuda())
        torch.cuda.synchronize()
        states.append(state_of(tr.G, tr.D, tr.opt_g, tr.opt_d, tr.step_fn)[:-1])
        if graphs:
            assert tr.step_fn.captures == 2  # with and without R1
            torch.cuda.set_sync_debug_mode("error")
            try:
                for _ in range(3):
                    tr.step_fn(x, torch.zeros(32, dtype=torch.int64, device="cuda"), tr.step)
                    tr.step += 1
            finally:
                torch.cuda.set_sync_debug_mode("default")
    diff = max_difference(*states)
    print(f"stabilisers, graphed vs eager (bf16): max difference {diff:.3g}")
    assert diff <= 1e-6
