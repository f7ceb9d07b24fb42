"""Tests for dcgan.models: shapes at every resolution, conditioning, parameter counts, init."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dcgan.config import SUPPORTED_RESOLUTIONS, ModelConfig
from dcgan.errors import UserError
from dcgan.models import build_discriminator, build_generator
from dcgan.models.dcgan import start_size

K = 10  # classes of the conditional variants


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # small kernels: extra threads only add contention on a shared machine
    yield
    torch.set_num_threads(old)


def tiny(**kw) -> ModelConfig:
    return ModelConfig(**{"g_width": 4, "d_width": 4, **kw})


CONDITIONING = [
    pytest.param(0, "all", "all", id="uncond"),
    pytest.param(K, "input", "input", id="g_input-d_input"),
    pytest.param(K, "input", "all", id="g_input-d_all"),
    pytest.param(K, "all", "input", id="g_all-d_input"),
    pytest.param(K, "all", "all", id="g_all-d_all"),
]


@pytest.mark.parametrize("kernel", [4, 5])
@pytest.mark.parametrize("classes, g_cond, d_cond", CONDITIONING)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("res", SUPPORTED_RESOLUTIONS)
def test_shapes_and_range(res, channels, classes, g_cond, d_cond, kernel):
    # hidden FC layers on for the conditional variants, off for the unconditional one: both paths are built
    fc = 16 if classes else 0
    cfg = tiny(kernel=kernel, g_cond=g_cond, d_cond=d_cond, g_fc=fc, d_fc=fc, z_dim=12)
    shape = (channels, res, res)
    torch.manual_seed(0)  # the weights too: the same in any test order
    G = build_generator(cfg, shape, classes)
    D = build_discriminator(cfg, shape, classes)
    n = 3
    z = torch.randn(n, cfg.z_dim)
    y = torch.tensor([0, 4, K - 1]) if classes else None
    x = G(z, y)
    assert x.shape == (n, channels, res, res)
    assert x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert x.std() > 0  # not a constant image
    logits = D(x, y)
    assert logits.shape == (n,)
    assert torch.isfinite(logits).all()
    # D takes real-looking data in [-1, 1] as well, and gradients reach G
    (D(G(z, y), y).sum()).backward()
    assert all(p.grad is not None for p in G.parameters())


@pytest.mark.parametrize("res, start, stages", [(28, 7, 2), (32, 4, 3), (64, 4, 4), (96, 6, 4), (128, 4, 5)])
def test_start_size(res, start, stages):
    assert start_size(res) == (start, stages)
    assert start * 2**stages == res


@pytest.mark.parametrize("res", [0, 50, 256, 16])
def test_unsupported_resolution(res):
    with pytest.raises(UserError, match="data.resolution"):
        build_generator(tiny(), (1, res, res), 0)
    with pytest.raises(UserError, match="data.resolution"):
        build_discriminator(tiny(), (1, res, res), 0)


def canonical_dcgan_g_params(nz: int, ngf: int, nc: int) -> int:
    """Parameters of the PyTorch examples DCGAN generator (bias-free ConvTranspose2d layers)."""
    def convt(cin, cout, k=4):
        return cin * cout * k * k

    def bn(c):
        return 2 * c  # weight and bias

    layers = [convt(nz, ngf * 8), bn(ngf * 8), convt(ngf * 8, ngf * 4), bn(ngf * 4),
              convt(ngf * 4, ngf * 2), bn(ngf * 2), convt(ngf * 2, ngf), bn(ngf), convt(ngf, nc)]
    return sum(layers)


@pytest.mark.parametrize("channels", [1, 3])
def test_64px_generator_has_the_canonical_parameter_count(channels):
    """ConvT(100,512,4)+BN(512)+...+ConvT(64,nc,4), all bias-free. Our G projects z with a bias-free
    Linear(100, 512*4*4) -- the same weights as the first k4 transposed conv from a 1x1 input -- and
    keeps a bias on the output layer (there is no batch norm after it to absorb one): that adds
    exactly `channels` parameters and nothing else."""
    G = build_generator(ModelConfig(), (channels, 64, 64), 0)
    n = sum(p.numel() for p in G.parameters())
    assert canonical_dcgan_g_params(100, 64, channels) == (3_574_656 if channels == 1 else 3_576_704)
    assert n == canonical_dcgan_g_params(100, 64, channels) + channels
    biases = [name for name, m in G.named_modules()
              if isinstance(m, (nn.Linear, nn.ConvTranspose2d, nn.Conv2d)) and m.bias is not None]
    assert biases == [f"ups.{len(G.ups) - 1}.0"]  # the output layer is the only one with a bias (besides BN)


def test_64px_discriminator_mirrors_the_generator():
    D = build_discriminator(ModelConfig(), (1, 64, 64), 0)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (1, 64, (4, 4), (2, 2)), (64, 128, (4, 4), (2, 2)), (128, 256, (4, 4), (2, 2)), (256, 512, (4, 4), (2, 2))]
    assert D.out.in_features == 512 * 4 * 4
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.downs[0].modules())  # no BN on D's input layer


def _zero_label_input_weights(G, z_dim: int) -> None:
    """Cut the label's path into G at its input (the one-hot columns of the first linear layer)."""
    first = G.fc[0] if G.fc is not None else G.project
    with torch.no_grad():
        first.weight[:, z_dim:].zero_()


@pytest.mark.parametrize("g_fc", [0, 16])
def test_conditional_generator_uses_the_label(g_fc):
    torch.manual_seed(0)
    cfg = tiny(g_cond="all", kernel=5, g_fc=g_fc)
    G = build_generator(cfg, (1, 28, 28), K).eval()
    z = torch.randn(1, cfg.z_dim).repeat(K, 1)  # the same z for every class
    y = torch.arange(K)
    x = G(z, y)
    for i in range(1, K):
        assert (x[0] - x[i]).abs().max() > 1e-4, f"class {i} gives the image of class 0"
    # site "all": the label reaches later layers too, so cutting it at the input does not remove it
    _zero_label_input_weights(G, cfg.z_dim)
    x = G(z, y)
    assert (x[0] - x[1]).abs().max() > 1e-4


def test_input_only_generator_sees_the_label_only_at_its_input():
    torch.manual_seed(0)
    cfg = tiny(g_cond="input", kernel=5)
    G = build_generator(cfg, (1, 28, 28), K).eval()
    assert G.project.in_features == cfg.z_dim + K
    for block in G.ups:
        conv = block[0]
        assert conv.in_channels in (cfg.g_width * 2, cfg.g_width)  # no label channels
    z = torch.randn(1, cfg.z_dim).repeat(2, 1)
    assert not torch.equal(*G(z, torch.tensor([0, 1])))
    _zero_label_input_weights(G, cfg.z_dim)
    a, b = G(z, torch.tensor([0, 1]))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # the input was its only path


def test_all_generator_has_label_channels_in_every_stage():
    cfg = tiny(g_cond="all", kernel=4, g_fc=16)
    G = build_generator(cfg, (3, 64, 64), K)
    unc = build_generator(cfg, (3, 64, 64), 0)
    assert G.fc[0].in_features == cfg.z_dim + K
    assert G.project.in_features == cfg.g_fc + K
    for block, ref in zip(G.ups, unc.ups):
        assert block[0].in_channels == ref[0].in_channels + K


@pytest.mark.parametrize("d_fc", [0, 16])
def test_input_only_discriminator_has_label_channels_only_in_its_first_layer(d_fc):
    torch.manual_seed(0)  # the weights too: the same in any test order
    cfg = tiny(d_cond="input", kernel=5, d_fc=d_fc)
    D = build_discriminator(cfg, (1, 28, 28), K)
    unc = build_discriminator(cfg, (1, 28, 28), 0)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    ref = [m for m in unc.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].in_channels == 1 + K
    assert [c.in_channels for c in convs[1:]] == [c.in_channels for c in ref[1:]]
    assert D.out.in_features == unc.out.in_features
    if d_fc:
        assert D.fc[0].in_features == unc.fc[0].in_features
    # and the label does change the logit
    torch.manual_seed(0)
    x = torch.rand(1, 1, 28, 28).repeat(2, 1, 1, 1) * 2 - 1
    D.eval()
    a, b = D(x, torch.tensor([0, 1]))
    assert a != b


def test_all_discriminator_has_label_channels_everywhere():
    cfg = tiny(d_cond="all", kernel=5, d_fc=16)
    D = build_discriminator(cfg, (1, 28, 28), K)
    unc = build_discriminator(cfg, (1, 28, 28), 0)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    ref = [m for m in unc.modules() if isinstance(m, nn.Conv2d)]
    assert [c.in_channels for c in convs] == [c.in_channels + K for c in ref]
    assert D.fc[0].in_features == unc.fc[0].in_features + K
    assert D.out.in_features == unc.out.in_features + K


def test_init_std_is_002():
    torch.manual_seed(0)
    cfg = ModelConfig(g_fc=256, d_fc=256)
    for model in (build_generator(cfg, (1, 64, 64), K), build_discriminator(cfg, (1, 64, 64), K)):
        weights = [m.weight.detach().flatten() for m in model.modules()
                   if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
        w = torch.cat(weights)
        assert abs(w.mean().item()) < 1e-3
        assert w.std().item() == pytest.approx(0.02, rel=0.02)
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and m.bias is not None:
                assert torch.count_nonzero(m.bias) == 0
        bn = torch.cat([m.weight.detach() for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))])
        assert bn.mean().item() == pytest.approx(1.0, abs=0.01)
        assert bn.std().item() == pytest.approx(0.02, rel=0.2)
