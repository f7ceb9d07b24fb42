"""Health of a run: skip updates with non-finite gradients, roll back when they persist, and warn
when D wins outright.

The optimizers are wrapped in `FiniteGuard`: its step() looks at the gradients first and skips
the update when any is NaN or infinite, so one bad batch never reaches the weights. The loop asks
`Health.after_step()` whether too many consecutive steps were skipped; then it rolls back to the
last good checkpoint with lower learning rates, at most `train.max_rollbacks` times.
"""

from __future__ import annotations

import torch


class TrainingDiverged(Exception):
    """The run kept producing non-finite values after every allowed rollback; exit code 1."""

    exit_code = 1


class FiniteGuard:
    """An optimizer whose step() is skipped (and counted) when a gradient is not finite."""

    def __init__(self, opt: torch.optim.Optimizer):
        self.opt = opt
        self.skipped = 0  # updates skipped since the last reset by Health

    @property
    def param_groups(self):
        return self.opt.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        grads = [p.grad for g in self.opt.param_groups for p in g["params"] if p.grad is not None]
        if grads and not bool(torch.stack(torch._foreach_norm(grads)).isfinite().all()):  # one sync
            self.skipped += 1
            self.opt.zero_grad(set_to_none=True)
            return
        self.opt.step()

    def state_dict(self):
        return self.opt.state_dict()

    def load_state_dict(self, state) -> None:
        self.opt.load_state_dict(state)


def all_finite(*modules: torch.nn.Module) -> bool:
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers()) if t.is_floating_point()]
    return bool(torch.stack(torch._foreach_norm(tensors)).isfinite().all()) if tensors else True


class Health:
    """Counts skipped steps and decides when to roll back; tracks 'D wins outright' ticks."""

    D_WINS_TICKS = 3  # consecutive ticks with D(x) > 0.99 and D(G(z)) < 0.01 before a warning

    def __init__(self, guards: list[FiniteGuard], modules: list[torch.nn.Module], max_bad_steps: int,
                 max_rollbacks: int):
        self.guards, self.max_bad_steps, self.max_rollbacks = guards, max_bad_steps, max_rollbacks
        # batch-norm running statistics change in the forward pass, before any optimizer step: a
        # skipped step must put them back too, so they are copied before each step (a few KB)
        self._buffers = [b for m in modules for b in m.buffers() if b.is_floating_point()]
        self._saved = [b.clone() for b in self._buffers]
        self.bad_in_a_row = 0
        self.skipped_total = 0
        self.rollbacks = 0
        self.d_wins_ticks = 0

    def before_step(self) -> None:
        if self._buffers:
            torch._foreach_copy_(self._saved, self._buffers)

    def after_step(self) -> bool:
        """Account for the step just taken; True when a rollback is due."""
        skipped = sum(g.skipped for g in self.guards)
        for g in self.guards:
            g.skipped = 0
        if skipped:
            if self._buffers:
                torch._foreach_copy_(self._buffers, self._saved)  # undo the bad batch's statistics
            self.bad_in_a_row += 1
            self.skipped_total += 1
        else:
            self.bad_in_a_row = 0
        return self.bad_in_a_row >= self.max_bad_steps

    def rolled_back(self) -> None:
        self.rollbacks += 1
        self.bad_in_a_row = 0
        if self.rollbacks > self.max_rollbacks:
            raise TrainingDiverged(
                f"training diverged: non-finite gradients for {self.max_bad_steps} steps in a row after "
                f"{self.max_rollbacks} rollbacks; lower the learning rates (optim.lr_g / optim.lr_d) or check the data"
            )

    def tick_warnings(self, d_real: float, d_fake: float) -> list[str]:
        """Warnings to log at a tick."""
        self.d_wins_ticks = self.d_wins_ticks + 1 if (d_real > 0.99 and d_fake < 0.01) else 0
        if self.d_wins_ticks == self.D_WINS_TICKS:
            return [f"D wins outright: D(x) > 0.99 and D(G(z)) < 0.01 for {self.D_WINS_TICKS} ticks; G gets no "
                    f"useful gradient (try loss.real_label=0.9, a lower optim.lr_d, or a smaller D)"]
        return []

    def state(self) -> dict:
        return {"skipped_total": self.skipped_total, "rollbacks": self.rollbacks}

    def load(self, state: dict) -> None:
        self.skipped_total, self.rollbacks = state["skipped_total"], state["rollbacks"]
