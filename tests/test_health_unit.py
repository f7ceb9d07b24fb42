"""dcgan/training/health.py piece by piece, on a model of two scalar parameters and one buffer (no
training loop, a few milliseconds each): the guard's skip decision, the counters behind a rollback
at exactly max_bad_steps, the batch statistics put back after a skipped step, the rollback budget,
the 'D wins' warning at exactly its thresholds and tick count, and the optimizer flags a loaded
state keeps. (docs/MUTATION.md: these tests kill the mutants the training tests let survive.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dcgan.training.health import FiniteGuard, Health, TrainingDiverged, all_finite


class Tiny(nn.Module):
    """Two scalar parameters, a float buffer (a running statistic) and an integer one (a counter)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([1.0]))
        self.b = nn.Parameter(torch.tensor([2.0]))
        self.register_buffer("stat", torch.tensor([0.5]))
        self.register_buffer("count", torch.tensor(0))


def guarded(m: nn.Module, **adam) -> FiniteGuard:
    return FiniteGuard(torch.optim.Adam(m.parameters(), lr=0.1, fused=True, **adam))


def setup(max_bad_steps=3, max_rollbacks=1):
    m = Tiny()
    g = guarded(m)
    return m, g, Health([g], [m], max_bad_steps=max_bad_steps, max_rollbacks=max_rollbacks)


def one_step(m, g, health, bad: bool) -> None:
    """What the training step does around the optimizer: save the statistics, change them (the
    forward pass), set gradients (NaN in a bad step), step, account."""
    health.before_step()
    with torch.no_grad():
        m.stat.add_(1.0)
    m.a.grad = torch.tensor([float("nan") if bad else 1.0])
    m.b.grad = torch.tensor([1.0])
    g.step()
    health.account()


# ---- FiniteGuard ---------------------------------------------------------------------------------

def test_the_guard_needs_a_fused_optimizer_and_shares_its_flag_with_it():
    m = Tiny()
    with pytest.raises(ValueError, match=r"^FiniteGuard needs a fused optimizer \(torch\.optim\.Adam\(\.\.\., fused=True\)\)$"):
        FiniteGuard(torch.optim.Adam(m.parameters(), lr=0.1))
    g = guarded(m)
    assert g.opt.found_inf is g.found_inf and g.found_inf.item() == 0.0 and g.found_inf.shape == ()
    assert g.param_groups is g.opt.param_groups


def test_a_non_finite_gradient_skips_the_update_and_a_finite_one_does_not():
    m = Tiny()
    g = guarded(m)
    m.a.grad, m.b.grad = torch.tensor([float("inf")]), torch.tensor([1.0])
    g.step()
    assert g.found_inf.item() == 1.0 and (m.a.item(), m.b.item()) == (1.0, 2.0)
    m.a.grad, m.b.grad = torch.tensor([1.0]), torch.tensor([1.0])
    g.step()  # the flag is cleared before each check
    assert g.found_inf.item() == 0.0
    assert m.a.item() == pytest.approx(0.9) and m.b.item() == pytest.approx(1.9)  # Adam's first step: lr * sign
    assert m.a.grad.item() == 1.0  # the check does not scale the gradients


def test_a_step_with_no_gradients_at_all_is_not_a_skip():
    m = Tiny()
    g = guarded(m)
    g.found_inf.fill_(1.0)
    g.step()
    assert g.found_inf.item() == 0.0 and m.a.item() == 1.0


def test_zero_grad_sets_gradients_to_none_unless_asked_for_zeros():
    m = Tiny()
    g = guarded(m)
    m.a.grad = torch.tensor([3.0])
    g.zero_grad()
    assert m.a.grad is None
    m.a.grad = torch.tensor([3.0])
    g.zero_grad(set_to_none=False)
    assert m.a.grad is not None and m.a.grad.item() == 0.0


def test_a_loaded_state_keeps_this_optimizers_fused_capturable_and_foreach_flags():
    """A state written by a non-fused optimizer with capturable=True and foreach=True (a GPU run's)
    loads into a guarded fused one: moments, step and learning rate come from the state; the three
    flags stay the guard's own (fused True, capturable False, foreach None), and no other key appears."""
    p = nn.Parameter(torch.ones(2))
    other = torch.optim.Adam([p], lr=0.3, foreach=True)
    p.grad = torch.ones(2)
    other.step()
    state = other.state_dict()
    state["param_groups"][0]["capturable"] = True  # as written on a GPU (a CPU Adam cannot step with it)
    assert state["param_groups"][0]["capturable"] is True and state["param_groups"][0]["foreach"] is True
    q = nn.Parameter(torch.ones(2))
    g = FiniteGuard(torch.optim.Adam([q], lr=0.1, fused=True))
    keys = set(g.param_groups[0])
    g.load_state_dict(state)
    group = g.param_groups[0]
    assert (group["fused"], group["capturable"], group["foreach"], group["lr"]) == (True, False, None, 0.3)
    assert set(group) == keys
    assert g.state_dict()["state"][0]["step"].item() == 1.0
    assert torch.equal(g.opt.state[q]["exp_avg"], other.state[p]["exp_avg"])


# ---- Health: the counters ------------------------------------------------------------------------

def test_a_rollback_is_due_at_exactly_max_bad_steps_in_a_row():
    m, g, health = setup(max_bad_steps=3)
    for _ in range(2):
        one_step(m, g, health, bad=True)
    assert health.check() is False and health.skipped_total == 2
    one_step(m, g, health, bad=True)  # the third in a row (the run goes on across the check)
    assert health.check() is True and health.skipped_total == 3
    assert health.check() is True  # still three in a row: the run has not ended
    health.reset_run()  # the loop rolls back
    one_step(m, g, health, bad=False)
    assert health.check() is False and health.skipped_total == 3


def test_bad_steps_that_are_not_in_a_row_never_ask_for_a_rollback():
    m, g, health = setup(max_bad_steps=2)
    for bad in (True, False, True, False, True, False):
        one_step(m, g, health, bad)
    assert health.check() is False and health.skipped_total == 3


def test_the_longest_run_since_the_last_check_counts_even_when_it_ended():
    m, g, health = setup(max_bad_steps=2)
    for bad in (True, True, False, False):
        one_step(m, g, health, bad)
    assert health.check() is True and health.skipped_total == 2
    assert health.check() is False


def test_a_skipped_step_puts_the_batch_statistics_back_and_a_good_one_keeps_them():
    m, g, health = setup()
    one_step(m, g, health, bad=True)
    assert m.stat.item() == 0.5 and m.count.item() == 0  # the forward pass's change undone
    one_step(m, g, health, bad=False)
    assert m.stat.item() == 1.5
    one_step(m, g, health, bad=True)
    assert m.stat.item() == 1.5


def test_either_optimizer_skipping_counts_the_step_as_skipped():
    m1, m2 = Tiny(), Tiny()
    g1, g2 = guarded(m1), guarded(m2)
    health = Health([g1, g2], [m1, m2], max_bad_steps=1, max_rollbacks=0)
    health.before_step()
    m1.a.grad, m1.b.grad = torch.ones(1), torch.ones(1)
    m2.a.grad, m2.b.grad = torch.ones(1), torch.tensor([float("nan")])
    g1.step()
    g2.step()
    health.account()
    assert health.check() is True and health.skipped_total == 1


def test_reset_run_forgets_the_bad_steps_before_a_rollback():
    m, g, health = setup(max_bad_steps=2)
    one_step(m, g, health, bad=True)
    health.reset_run()
    one_step(m, g, health, bad=True)
    assert health.check() is False  # 1 + 1, not 2 in a row
    assert health.skipped_total == 2


def test_the_rollback_budget_then_training_diverged():
    m, g, health = setup(max_bad_steps=4, max_rollbacks=2)
    one_step(m, g, health, bad=True)
    health.rolled_back()
    assert health.rollbacks == 1
    one_step(m, g, health, bad=True)
    assert health.check() is False  # the run before the rollback no longer counts
    health.rolled_back()
    assert health.rollbacks == 2
    with pytest.raises(TrainingDiverged) as e:
        health.rolled_back()
    assert str(e.value) == ("training diverged: non-finite gradients for 4 steps in a row after 2 rollbacks; lower the "
                            "learning rates (optim.lr_g / optim.lr_d) or check the data")
    assert e.value.exit_code == 1 and health.rollbacks == 3


def test_state_and_load_carry_the_totals():
    m, g, health = setup()
    assert health.state() == {"skipped_total": 0, "rollbacks": 0}
    health.load({"skipped_total": 7, "rollbacks": 2})
    assert (health.skipped_total, health.rollbacks) == (7, 2)
    assert health.state() == {"skipped_total": 7, "rollbacks": 2}
    one_step(m, g, health, bad=True)
    health.check()
    assert health.state() == {"skipped_total": 8, "rollbacks": 2}


# ---- Health: the 'D wins' warning ----------------------------------------------------------------

WARNING = ("D wins outright: D(x) > 0.99 and D(G(z)) < 0.01 for 3 ticks; G gets no useful gradient (try "
           "loss.real_label=0.9, a lower optim.lr_d, or a smaller D)")


def test_d_wins_is_said_once_at_the_third_tick_in_a_row():
    _, _, health = setup()
    assert Health.D_WINS_TICKS == 3
    assert health.tick_warnings(0.995, 0.005) == []
    assert health.tick_warnings(0.995, 0.005) == []
    assert health.tick_warnings(0.995, 0.005) == [WARNING]
    assert health.tick_warnings(0.995, 0.005) == []  # said once, not at every tick after
    assert health.d_wins_ticks == 4


@pytest.mark.parametrize("d_real, d_fake", [(0.99, 0.005), (0.995, 0.01), (0.5, 0.005), (0.995, 0.5)])
def test_d_wins_needs_both_strict_thresholds(d_real, d_fake):
    _, _, health = setup()
    for _ in range(2):
        health.tick_warnings(0.995, 0.005)
    assert health.tick_warnings(d_real, d_fake) == []
    assert health.d_wins_ticks == 0  # one tick outside the thresholds starts the count again
    assert [health.tick_warnings(0.995, 0.005) for _ in range(3)] == [[], [], [WARNING]]


# ---- all_finite ----------------------------------------------------------------------------------

def test_all_finite_looks_at_float_parameters_and_buffers():
    m = Tiny()
    assert all_finite(m) is True
    assert all_finite() is True and all_finite(nn.Module()) is True
    with torch.no_grad():
        m.stat.fill_(float("nan"))
    assert all_finite(m) is False and all_finite(Tiny(), m) is False
    m = Tiny()
    with torch.no_grad():
        m.b.fill_(float("-inf"))
    assert all_finite(m) is False


def test_the_flags_and_counters_live_on_the_parameters_device():
    """On a GPU nothing in a step may wait for the host: the guard's flag and the health counters
    are made on the parameters' device. The "meta" device stands in for a GPU here."""
    p = nn.Parameter(torch.ones(2, device="meta"))
    g = FiniteGuard(torch.optim.Adam([p], lr=0.1, fused=True))
    assert g.found_inf.device.type == g._one.device.type == "meta"
    health = Health([g], [], max_bad_steps=3, max_rollbacks=1)
    assert {t.device.type for t in (health._bad, health._run, health._worst, health._count)} == {"meta"}
