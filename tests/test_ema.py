"""The EMA of the generator's weights (dcgan/training/ema.py), checked by hand on a model of two
scalar parameters and one buffer: the weight each side of the average gets, the warm-up ramp of
the decay, its cap, and the buffers copied rather than averaged."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dcgan.training.ema import EMA


class Two(nn.Module):
    """Two scalar parameters a, b (each (1,)) and one buffer `stat` (1,), as a batch-norm running
    statistic would be."""

    def __init__(self, a: float, b: float, stat: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([a]))
        self.b = nn.Parameter(torch.tensor([b]))
        self.register_buffer("stat", torch.tensor([stat]))


def set_weights(G: Two, a: float, b: float, stat: float) -> None:
    with torch.no_grad():
        G.a.fill_(a)
        G.b.fill_(b)
        G.stat.fill_(stat)


def values(m: Two) -> tuple[float, float, float]:
    return m.a.item(), m.b.item(), m.stat.item()


def f32(x: float) -> pytest.approx:
    """x, computed in float64 by hand, to float32 rounding (a few ulps of the EMA's float32 lerp)."""
    return pytest.approx(x, rel=1e-6, abs=1e-7)


def test_first_update_weighs_the_new_weights_by_one_minus_the_ramped_decay():
    """Step 0 with decay 0.999: the ramp gives d = min(0.999, (1+0)/(10+0)) = 0.1, so the average
    moves 90% of the way to G (ema = 0.1·ema + 0.9·G); with the weights swapped (d on G) it would
    move only 10%. The buffer is copied from G, not averaged."""
    G = Two(1.0, -2.0, 5.0)
    ema = EMA(G, decay=0.999)
    assert values(ema.model) == (1.0, -2.0, 5.0)  # starts as a copy of G
    set_weights(G, 3.0, 6.0, 7.0)
    ema.update(G, step=0)
    a, b, stat = values(ema.model)
    assert a == f32(0.1 * 1.0 + 0.9 * 3.0)  # 2.8 (a swapped weight gives 1.2)
    assert b == f32(0.1 * -2.0 + 0.9 * 6.0)  # 5.2 (a swapped weight gives -1.2)
    assert stat == 7.0  # copied exactly (an average would give 6.8)
    assert values(G) == (3.0, 6.0, 7.0)  # G is read, never written
    assert not ema.model.a.requires_grad and not ema.model.training


def test_ramp_over_several_steps_then_the_cap():
    """Steps 0..3 with decay 0.2 and G's weights changing every step: d = min(0.2, (1+s)/(10+s)) is
    0.1 and 2/11 on the ramp, then the cap 0.2 (3/12 and 4/13 are above it); the average is worked
    out by hand in float64. Then a late step (s = 1000), where the ramp (0.991) is far above the
    decay and the cap d = decay applies."""
    decay = 0.2
    G = Two(0.0, 10.0, 0.0)
    ema = EMA(G, decay=decay)
    a, b = 0.0, 10.0  # the expected average, by hand
    targets = [(1.0, 2.0), (4.0, -3.0), (-2.0, 0.5), (8.0, 8.0)]  # G's (a, b) at steps 0..3
    ds = [1 / 10, 2 / 11, 0.2, 0.2]  # min(0.2, 1/10), min(0.2, 2/11), min(0.2, 3/12), min(0.2, 4/13)
    for step, ((ga, gb), d) in enumerate(zip(targets, ds)):
        set_weights(G, ga, gb, float(step))
        ema.update(G, step)
        a, b = d * a + (1 - d) * ga, d * b + (1 - d) * gb
        got = values(ema.model)
        assert got[0] == f32(a) and got[1] == f32(b), (step, got, (a, b))
        assert got[2] == float(step)  # the buffer: G's, this step
    # a late step: the ramp (1+1000)/(10+1000) = 0.991 is capped at decay = 0.2 (a cap ignored, or
    # max instead of min, would keep 99% of the old average)
    set_weights(G, 100.0, -100.0, 0.0)
    ema.update(G, 1000)
    a, b = 0.2 * a + 0.8 * 100.0, 0.2 * b + 0.8 * -100.0
    assert values(ema.model)[:2] == (f32(a), f32(b))


def test_high_decay_late_in_training_keeps_most_of_the_average():
    """decay 0.99 at step 10,000: the ramp is 10001/10010 = 0.9991 > 0.99, so d = 0.99 and one update
    moves the average 1% of the way to G."""
    G = Two(0.0, 0.0, 0.0)
    ema = EMA(G, decay=0.99)
    set_weights(G, 50.0, -25.0, 3.0)
    ema.update(G, 10_000)
    assert values(ema.model) == (f32(0.5), f32(-0.25), 3.0)
