"""Health of a run: skip updates with non-finite gradients, roll back when they persist, and warn
when D wins outright.

The optimizers are wrapped in `FiniteGuard`: its step() looks at the gradients first and skips
the update when any is NaN or infinite, so one bad batch never reaches the weights; the decision
stays on the device (no host sync inside a step). The loop asks `Health.check()` whether too many
consecutive steps were skipped; then it rolls back to the last good checkpoint with lower learning
rates, at most `train.max_rollbacks` times.
"""

from __future__ import annotations

import torch


class TrainingDiverged(Exception):
    """The run kept producing non-finite values after every allowed rollback; exit code 1."""

    exit_code = 1


class FiniteGuard:
    """An optimizer whose update is skipped, on the device, when a gradient is not NaN or infinite.

    step() sets `found_inf` (a 0-d device tensor: 1.0 = skip) from the gradients and hands it to the
    fused Adam kernel, which leaves the weights, moments and step count as they were when it is set.
    Nothing waits for the device, so the check also runs inside a captured CUDA graph."""

    def __init__(self, opt: torch.optim.Optimizer):
        if not all(g.get("fused") for g in opt.param_groups):
            raise ValueError("FiniteGuard needs a fused optimizer (torch.optim.Adam(..., fused=True))")
        self.opt = opt
        device = opt.param_groups[0]["params"][0].device
        self.found_inf = torch.zeros((), device=device)  # 1.0 when this step's update was skipped
        self._one = torch.ones((), device=device)
        opt.found_inf = self.found_inf  # read by the fused kernel at every step

    @property
    def param_groups(self):
        return self.opt.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        grads = [p.grad for g in self.opt.param_groups for p in g["params"] if p.grad is not None]
        self.found_inf.zero_()
        if grads:  # found_inf ← 1 if any gradient holds a NaN or an infinity (grads unchanged: scale 1)
            torch._amp_foreach_non_finite_check_and_unscale_(grads, self.found_inf, self._one)
        self.opt.step()

    def state_dict(self):
        return self.opt.state_dict()

    def load_state_dict(self, state) -> None:
        """Load moments, steps and learning rates; how the optimizer runs (fused, capturable) stays
        this one's, whatever the checkpoint was written with (e.g. an eager CPU run resumed on a GPU
        with CUDA graphs): torch would otherwise take those flags from the checkpoint."""
        how = ("fused", "capturable", "foreach")
        groups = [{**saved, **{k: ours.get(k) for k in how}} for saved, ours in zip(state["param_groups"], self.opt.param_groups)]
        self.opt.load_state_dict({**state, "param_groups": groups})


def all_finite(*modules: torch.nn.Module) -> bool:
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers()) if t.is_floating_point()]
    return bool(torch.stack(torch._foreach_norm(tensors)).isfinite().all()) if tensors else True


class Health:
    """Counts skipped steps and decides when to roll back; tracks 'D wins outright' ticks.

    The per-step part (`before_step`, `account`) runs on the device without a host sync, so it can
    sit inside a CUDA graph; `check()` reads the counters (one sync) and says whether a rollback
    is due: the loop calls it every step on the CPU and every few steps on a GPU."""

    D_WINS_TICKS = 3  # consecutive ticks with D(x) > 0.99 and D(G(z)) < 0.01 before a warning

    def __init__(self, guards: list[FiniteGuard], modules: list[torch.nn.Module], max_bad_steps: int,
                 max_rollbacks: int):
        self.guards, self.max_bad_steps, self.max_rollbacks = guards, max_bad_steps, max_rollbacks
        # batch-norm running statistics change in the forward pass, before any optimizer step: a
        # skipped step must put them back too, so they are copied before each step (a few KB)
        self._buffers = [b for m in modules for b in m.buffers() if b.is_floating_point()]
        self._saved = [b.clone() for b in self._buffers]
        device = guards[0].found_inf.device
        # device counters (0-d float): this step skipped, the current run of skipped steps, its
        # longest length since the last check, skipped steps since the last check
        self._bad, self._run, self._worst, self._count = (torch.zeros((), device=device) for _ in range(4))
        self.skipped_total = 0
        self.rollbacks = 0
        self.d_wins_ticks = 0

    def before_step(self) -> None:
        if self._buffers:
            torch._foreach_copy_(self._saved, self._buffers)

    def account(self) -> None:
        """After the optimizer steps: undo a skipped step's batch statistics and count it (device only)."""
        torch.amax(torch.stack([g.found_inf for g in self.guards]), out=self._bad)  # 1.0: either optimizer skipped
        skipped = self._bad.bool()
        for b, saved in zip(self._buffers, self._saved):
            b.copy_(torch.where(skipped, saved, b))  # the statistics as they were before a skipped step
        self._run.add_(self._bad).mul_(self._bad)  # consecutive skipped steps (0 after a good one)
        torch.maximum(self._worst, self._run, out=self._worst)
        self._count.add_(self._bad)

    def check(self) -> bool:
        """Read the counters (a host sync); True when a rollback is due."""
        worst, count = (int(v) for v in torch.stack([self._worst, self._count]).tolist())
        self.skipped_total += count
        self._count.zero_()
        self._worst.copy_(self._run)
        return worst >= self.max_bad_steps

    def reset_run(self) -> None:
        """After a rollback: the skipped steps before it no longer count towards the next one."""
        for t in (self._run, self._worst):
            t.zero_()

    def rolled_back(self) -> None:
        self.rollbacks += 1
        self.reset_run()
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
