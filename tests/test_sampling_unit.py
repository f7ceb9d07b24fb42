"""dcgan/sampling.py with stub models (no training, a few milliseconds each): how generate() cuts
its work into batches and labels, the modes and grad mode it leaves behind, the progress bar it
feeds, d_scores' batches, top_k_by_d's limits and defaults, load_discriminator on a checkpoint
written here, and the messages of bad --labels. (docs/MUTATION.md: these tests kill the mutants
the command-level tests let survive.)"""

from __future__ import annotations

import pytest
import torch

from dcgan import checkpoint
from dcgan.config import Config
from dcgan.errors import UserError
from dcgan.models import build_discriminator, build_generator
from dcgan.sampling import (
    NOISE_BLOCK,
    UNCONDITIONAL_LABELS,
    cycled,
    d_scores,
    generate,
    generate_chunks,
    label_cycle,
    load_discriminator,
    noise,
    noise_blocks,
    top_k_by_d,
)


class SpyG(torch.nn.Module):
    """A generator of 2x2 grey images, pixel j of image i = tanh(z[i, j]) (+ 0.1 * label when given),
    that records each call's batch size, labels, training mode and grad mode."""

    def __init__(self, num_classes: int = 0, out_shape=(1, 2, 2)):
        super().__init__()
        self.z_dim, self.num_classes, self.out_shape = 4, num_classes, out_shape
        self.w = torch.nn.Parameter(torch.ones(1))  # requires grad: the output would too, outside no_grad
        self.calls = []

    def forward(self, z, y=None):
        self.calls.append((len(z), None if y is None else y.tolist(), self.training, torch.is_grad_enabled()))
        x = torch.tanh(z) * self.w
        if y is not None:
            x = x + 0.1 * y[:, None].float()
        return x.view(-1, *self.out_shape) if len(self.out_shape) == 3 else x[:, : self.out_shape[0]]


class SpyD(torch.nn.Module):
    """A discriminator whose logit is the mean pixel (+ 0.01 * label), recording batch sizes, labels
    and training mode; `constant` makes every score equal (ties)."""

    def __init__(self, constant: bool = False):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.constant, self.calls = constant, []

    def forward(self, x, y=None):
        self.calls.append((len(x), None if y is None else y.tolist(), self.training, torch.is_grad_enabled()))
        logit = x.mean((1, 2, 3)) * self.w
        if self.constant:
            return logit * 0.0
        return logit + 0.01 * y.float() if y is not None else logit


# ---- labels --------------------------------------------------------------------------------------

def test_label_cycles_and_their_messages():
    assert label_cycle(None, 3).tolist() == [0, 1, 2] and label_cycle("all", 3).tolist() == [0, 1, 2]
    assert label_cycle("2,0", 3).tolist() == [2, 0]
    assert label_cycle(None, 0) is None and label_cycle("all", 0) is None
    with pytest.raises(UserError) as e:
        label_cycle("1", 0)
    assert str(e.value) == UNCONDITIONAL_LABELS
    with pytest.raises(UserError) as e:
        label_cycle("3,10", 10)
    assert str(e.value) == "--labels '3,10': classes must be in 0..9, got [10]"
    with pytest.raises(UserError) as e:
        label_cycle("-1", 4)
    assert str(e.value) == "--labels '-1': classes must be in 0..3, got [-1]"
    with pytest.raises(UserError) as e:
        label_cycle("one", 4)
    assert str(e.value) == "--labels 'one': expected 'all', a class number or a list like 0,1,2"
    assert cycled(None, 0, 4) is None
    assert cycled(torch.tensor([2, 5]), 3, 6).tolist() == [5, 2, 5]


# ---- generate ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, z_dim, sizes", [
    (33, 16, [32, 1]),  # a tail of 16 values continues the draw: a block of its own
    (33, 1, [33]),  # a tail of 1 value joins the block before it
    (47, 1, [47]),  # 15 values: joins
    (48, 1, [32, 16]),  # 16 values: its own block
    (64, 1, [32, 32]),  # no tail
])
def test_noise_blocks_sizes_and_their_tails(n, z_dim, sizes):
    blocks = list(noise_blocks(n, z_dim, 7, rows=32))
    assert [len(b) for b in blocks] == sizes
    assert torch.equal(torch.cat(blocks), noise(n, z_dim, 7))


def test_generate_defaults_seed_0_and_batches_of_500():
    G = SpyG()
    out = generate(G, 501)
    assert [c[0] for c in G.calls] == [500, 1]
    assert torch.equal(out, generate(SpyG(), 501, seed=0)) and not torch.equal(out, generate(SpyG(), 501, seed=1))


def test_generate_cuts_batches_and_labels_in_order():
    G = SpyG(num_classes=3)
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 1])
    out = generate(G, 7, labels, seed=4, batch_size=3)
    assert [c[0] for c in G.calls] == [3, 3, 1]
    assert [c[1] for c in G.calls] == [[0, 1, 2], [2, 1, 0], [1]]
    want = ((torch.tanh(noise(7, 4, 4)) + 0.1 * labels[:, None].float()).view(7, 1, 2, 2) + 1) * 127.5
    assert torch.equal(out, want.round().clamp(0, 255).byte())


def test_generate_chunks_cycles_labels_across_batches_and_blocks():
    G = SpyG(num_classes=3)
    chunks = list(generate_chunks(G, 7, seed=1, batch_size=3, cycle=torch.tensor([1, 2])))
    assert [y.tolist() for _, y in chunks] == [[1, 2, 1], [2, 1, 2], [1]]
    assert [c[1] for c in G.calls] == [[1, 2, 1], [2, 1, 2], [1]]
    G = SpyG()
    assert [y for _, y in generate_chunks(G, 4, batch_size=3)] == [None, None]


def test_generate_from_given_noise_uses_its_rows_in_order_across_noise_blocks():
    n = NOISE_BLOCK + 5
    z = torch.randn(n, 4, generator=torch.Generator().manual_seed(3))
    G = SpyG()
    out = generate(G, n, z=z, batch_size=NOISE_BLOCK)
    assert [c[0] for c in G.calls] == [NOISE_BLOCK, 5]
    want = ((torch.tanh(z).view(n, 1, 2, 2) + 1) * 127.5).round().clamp(0, 255).byte()
    assert torch.equal(out, want)


def test_generate_runs_in_eval_mode_without_grad_and_leaves_both_modes_as_they_were():
    G = SpyG()
    G.train()
    chunks = generate_chunks(G, 4, batch_size=2)
    x, _ = next(chunks)
    assert torch.is_grad_enabled()  # the caller's grad mode between chunks
    assert not x.requires_grad
    list(chunks)
    assert [(c[2], c[3]) for c in G.calls] == [(False, False), (False, False)]
    assert G.training  # restored
    G.eval()
    generate(G, 2)
    assert not G.training


def test_generate_of_points_gives_float32_as_they_are_and_zero_samples_give_an_empty_tensor():
    G = SpyG(out_shape=(2,))
    z = torch.tensor([[0.5, -0.25, 9.0, 9.0]])
    out = generate(G, 1, z=z)
    assert out.dtype == torch.float32 and out.tolist() == [[pytest.approx(float(torch.tanh(torch.tensor(0.5)))),
                                                           pytest.approx(float(torch.tanh(torch.tensor(-0.25))))]]
    empty = generate(G, 0)
    assert empty.shape == (0, 2) and empty.dtype == torch.float32
    empty = generate(SpyG(), 0)
    assert empty.shape == (0, 1, 2, 2) and empty.dtype == torch.uint8


def test_generate_feeds_the_progress_bar_every_sample_and_closes_it(monkeypatch):
    import dcgan.progress

    class Bar:
        def __init__(self, iterable, desc, unit):
            self.total, self.counted, self.closed, self.desc, self.unit = len(iterable), [], 0, desc, unit

        def update(self, k):
            self.counted.append(k)

        def close(self):
            self.closed += 1

    bars = []
    monkeypatch.setattr(dcgan.progress, "steps", lambda it, desc, unit: bars.append(Bar(it, desc, unit)) or bars[-1])
    generate(SpyG(), 5, batch_size=2)
    (bar,) = bars
    assert (bar.total, bar.counted, bar.closed, bar.desc, bar.unit) == (5, [2, 2, 1], 1, "generate", "img")


# ---- d_scores and top_k_by_d ---------------------------------------------------------------------

def test_d_scores_batches_labels_modes_and_values():
    D = SpyD()
    D.train()
    images = torch.tensor([0, 255, 51, 204, 102], dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 1, 2, 2)
    labels = torch.tensor([0, 1, 2, 3, 4])
    scores = d_scores(D, images, labels, batch_size=2)
    assert [c[0] for c in D.calls] == [2, 2, 1] and [c[1] for c in D.calls] == [[0, 1], [2, 3], [4]]
    assert all(c[2] is False and c[3] is False for c in D.calls) and D.training
    x = images[:, 0, 0, 0].float() / 127.5 - 1.0
    assert scores.tolist() == pytest.approx(torch.sigmoid(x + 0.01 * labels.float()).tolist(), abs=1e-7)
    assert d_scores(SpyD(), images, batch_size=500).tolist() == pytest.approx(torch.sigmoid(x).tolist(), abs=1e-7)
    assert [c[0] for c in D.calls[3:]] == []
    empty = d_scores(D, images[:0])
    assert empty.shape == (0,)


def test_top_k_by_d_accepts_k_from_1_to_m_and_says_what_is_wrong_otherwise():
    G, D = SpyG(), SpyD()
    assert top_k_by_d(G, D, 1, 3)[0].shape == (1, 1, 2, 2)
    assert top_k_by_d(G, D, 3, 3)[0].shape == (3, 1, 2, 2)
    for k, m in ((0, 3), (4, 3)):
        with pytest.raises(UserError) as e:
            top_k_by_d(G, D, k, m)
        assert str(e.value) == f"--top-k-by-d {k} --from {m}: need 1 <= K <= M"
    with pytest.raises(UserError) as e:
        top_k_by_d(SpyG(out_shape=(2,)), D, 1, 3)
    assert str(e.value) == "--top-k-by-d works on image generators only"


def test_top_k_by_d_defaults_and_batches():
    """Seed 0 and batches of 500 by default; a given batch_size reaches both G and D."""
    G, D = SpyG(), SpyD()
    first = top_k_by_d(G, D, 2, 501)
    assert [c[0] for c in G.calls] == [500, 1] and [c[0] for c in D.calls] == [500, 1]
    again = top_k_by_d(SpyG(), SpyD(), 2, 501, seed=0)
    other = top_k_by_d(SpyG(), SpyD(), 2, 501, seed=1)
    assert torch.equal(first[0], again[0]) and not torch.equal(first[0], other[0])
    G, D = SpyG(), SpyD()
    top_k_by_d(G, D, 2, 7, batch_size=3)
    assert [c[0] for c in G.calls] == [3, 3, 1] and [c[0] for c in D.calls] == [3, 3, 1]


def test_top_k_by_d_keeps_generation_order_among_ties():
    G = SpyG()
    images, _, scores = top_k_by_d(G, SpyD(constant=True), 40, 64)
    pool = generate(SpyG(), 64)
    assert torch.equal(images, pool[:40]) and (scores == 0.5).all()


# ---- load_discriminator --------------------------------------------------------------------------

def write_checkpoint(path, slim=False, d_state=None):
    """A checkpoint of an untrained tiny mnist-cdcgan (widths 8): what load_discriminator reads."""
    cfg = Config()
    cfg.update({"model": {"g_width": 8, "d_width": 8, "g_fc": 32, "d_fc": 32}})
    torch.manual_seed(0)
    G = build_generator(cfg.model, (1, 28, 28), 10)
    D = build_discriminator(cfg.model, (1, 28, 28), 10)
    state = {"config": cfg.to_dict(), "data": {"shape": [1, 28, 28], "num_classes": 10}, "step": 3,
             "models": {"G": G.state_dict(), "G_ema": G.state_dict(), "D": d_state if d_state is not None else D.state_dict()}}
    checkpoint.save(checkpoint.slim(state) if slim else state, path)
    return D


def test_load_discriminator_gives_the_saved_weights_in_eval_mode_on_the_asked_device(tmp_path):
    path = tmp_path / "a.ckpt"
    D0 = write_checkpoint(path)
    D = load_discriminator(path)  # the default device: the CPU
    assert not D.training and next(D.parameters()).device.type == "cpu"
    for (k, v), (k0, v0) in zip(D.state_dict().items(), D0.state_dict().items()):
        assert k == k0 and torch.equal(v, v0)
    assert next(load_discriminator(path, device="meta").parameters()).device.type == "meta"


def test_load_discriminator_says_what_is_missing(tmp_path):
    slim = tmp_path / "slim.ckpt"
    write_checkpoint(slim, slim=True)
    with pytest.raises(UserError) as e:
        load_discriminator(slim)
    assert str(e.value) == (f"{slim} is a slim checkpoint (the generator only, kept for sampling); the discriminator is "
                            f"in the run's newest checkpoint: give the run folder")
    wrong = tmp_path / "wrong.ckpt"
    write_checkpoint(wrong, d_state={"nope": torch.zeros(1)})
    with pytest.raises(UserError) as e:
        load_discriminator(wrong)
    assert str(e.value).startswith(f"{wrong}: no discriminator weights that fit model 'dcgan' (")
    bad = tmp_path / "bad.ckpt"
    state = checkpoint.load(wrong)
    state["config"]["model"]["no_such_key"] = 1
    checkpoint.save(state, bad)
    with pytest.raises(UserError) as e:
        load_discriminator(bad)
    assert str(e.value).startswith(f"{bad}: unknown config key 'model.no_such_key'")


class MetaG(torch.nn.Module):
    """A generator whose weights live on the "meta" device (a stand-in for a GPU): it records the
    device of the noise and labels it is given and returns CPU images of -1 (black)."""

    def __init__(self):
        super().__init__()
        self.z_dim, self.num_classes, self.out_shape = 4, 3, (1, 2, 2)
        self.w = torch.nn.Parameter(torch.ones(1, device="meta"))
        self.seen = []

    def forward(self, z, y=None):
        self.seen.append((z.device.type, None if y is None else y.device.type))
        return -torch.ones(len(z), 1, 2, 2)


class MetaD(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1, device="meta"))
        self.seen = []

    def forward(self, x, y=None):
        self.seen.append((x.device.type, None if y is None else y.device.type))
        return torch.zeros(len(x))


def test_noise_labels_and_images_are_sent_to_the_models_device():
    G = MetaG()
    generate(G, 3, torch.tensor([0, 1, 2]), batch_size=2)
    assert G.seen == [("meta", "meta"), ("meta", "meta")]
    D = MetaD()
    d_scores(D, torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 2]), batch_size=2)
    assert D.seen == [("meta", "meta"), ("meta", "meta")]


def test_labels_stay_aligned_over_many_noise_blocks():
    n = 2 * NOISE_BLOCK + 4  # three noise blocks (a tail of 4 rows x 4 values continues the draw)
    G = SpyG(num_classes=7)
    labels = torch.arange(n) % 7
    list(generate_chunks(G, n, labels, batch_size=NOISE_BLOCK))
    assert [c[0] for c in G.calls] == [NOISE_BLOCK, NOISE_BLOCK, 4]
    assert [y for c in G.calls for y in c[1]] == labels.tolist()
    G = SpyG(num_classes=7)
    list(generate_chunks(G, n, batch_size=NOISE_BLOCK, cycle=torch.tensor([5, 6])))
    assert G.calls[2][1] == [[5, 6][i % 2] for i in range(2 * NOISE_BLOCK, n)]


def test_d_scores_default_batches_of_500():
    D = SpyD()
    d_scores(D, torch.zeros(501, 1, 2, 2, dtype=torch.uint8))
    assert [c[0] for c in D.calls] == [500, 1]
