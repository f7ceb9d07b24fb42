"""One `generate()` used by training grids and monitors, the sample command and every metric."""

from __future__ import annotations

from typing import Iterator

import torch

from .data.raw import kind_of
from .errors import UserError
from .images import from_uint8, to_uint8


# `dcgan sample --labels ...` of an unconditional run, whatever the value ('all' included)
UNCONDITIONAL_LABELS = "this generator is unconditional (it takes no labels); drop --labels"


def label_cycle(spec: str | None, num_classes: int) -> torch.Tensor | None:
    """The labels `spec` asks for, as the cycle they repeat: 'all' → 0..K-1, '3' → [3], '0,1,2' →
    [0, 1, 2]; None for an unconditional generator. Sample i gets cycle[i % len(cycle)].
    'all' of an unconditional generator is None (the metrics ask for 'all' of any generator); the
    command line refuses any --labels for one (UNCONDITIONAL_LABELS)."""
    if num_classes == 0:
        if spec not in (None, "all"):
            raise UserError(UNCONDITIONAL_LABELS)
        return None
    spec = spec or "all"
    if spec == "all":
        return torch.arange(num_classes)
    try:
        values = [int(v) for v in spec.split(",")]
    except ValueError:
        raise UserError(f"--labels {spec!r}: expected 'all', a class number or a list like 0,1,2") from None
    bad = [v for v in values if not 0 <= v < num_classes]
    if bad:
        raise UserError(f"--labels {spec!r}: classes must be in 0..{num_classes - 1}, got {bad}")
    return torch.tensor(values)


def cycled(cycle: torch.Tensor | None, start: int, stop: int) -> torch.Tensor | None:
    """Labels start..stop-1 of the repeating `cycle` (int64), or None."""
    return None if cycle is None else cycle[torch.arange(start, stop) % len(cycle)]


def parse_labels(spec: str | None, n: int, num_classes: int) -> torch.Tensor | None:
    """'all' cycles 0..K-1; '3' repeats one class; '0,1,2' cycles the list. None for unconditional."""
    return cycled(label_cycle(spec, num_classes), 0, n)


# Noise is drawn this many rows at a time: a multiple of 16, so the blocks continue one draw exactly.
NOISE_BLOCK = 4096


def noise(n: int, z_dim: int, seed: int) -> torch.Tensor:
    """(n, z_dim) standard normal noise, the same for a seed on every device and batch size."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, z_dim, generator=g)


def noise_blocks(n: int, z_dim: int, seed: int, rows: int = NOISE_BLOCK) -> Iterator[torch.Tensor]:
    """noise(n, z_dim, seed) in consecutive blocks of about `rows` rows, never holding more.

    torch's CPU normal sampler fills a tensor 16 values at a time from consecutive uniform draws
    (and draws 16 more for a ragged end), so blocks whose sizes are multiples of 16 values continue
    one draw exactly, as long as the last block has at least 16 values: a shorter tail joins the
    block before it (tests/test_sampling.py checks the equality)."""
    assert rows % 16 == 0
    g = torch.Generator().manual_seed(seed)
    start = 0
    while start < n:
        stop = min(n, start + rows)
        if 0 < (n - stop) * z_dim < 16:
            stop = n
        yield torch.randn(stop - start, z_dim, generator=g)
        start = stop


@torch.no_grad()
def generate_chunks(G: torch.nn.Module, n: int, labels: torch.Tensor | None = None, seed: int = 0,
                    batch_size: int = 500, z: torch.Tensor | None = None,
                    cycle: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """generate()'s samples in consecutive chunks (samples, their labels or None), holding one noise
    block at a time, so any n fits in memory. Labels: `labels` (n,), or a repeating `cycle`."""
    # the work is in an undecorated generator, which mutation testing reaches (docs/MUTATION.md);
    # no_grad still covers every step of it (torch enters the context at each resumption)
    yield from _generate_chunks(G, n, labels, seed, batch_size, z, cycle)


def _generate_chunks(G, n, labels, seed, batch_size, z, cycle):
    device = next(G.parameters()).device
    convert = to_uint8 if kind_of(G.out_shape) == "images" else (lambda x: x.float().cpu())
    blocks = noise_blocks(n, G.z_dim, seed) if z is None else (z[i : i + NOISE_BLOCK] for i in range(0, n, NOISE_BLOCK))
    was_training = G.training
    G.eval()
    try:
        from .progress import steps  # a bar only inside progress.showing() (dcgan sample / eval)

        start = 0
        bar = steps(range(n), desc="generate", unit="img")
        for block in blocks:  # (rows, z_dim)
            for i in range(0, len(block), batch_size):
                zb = block[i : i + batch_size]
                lo, hi = start + i, start + i + len(zb)
                yb = labels[lo:hi] if labels is not None else cycled(cycle, lo, hi)
                out = convert(G(zb.to(device), yb.to(device) if yb is not None else None))
                if hasattr(bar, "update"):
                    bar.update(len(zb))
                yield out, yb
            start += len(block)
    finally:
        G.train(was_training)
        if hasattr(bar, "close"):
            bar.close()


def generate(G: torch.nn.Module, n: int, labels: torch.Tensor | None = None, seed: int = 0,
             batch_size: int = 500, z: torch.Tensor | None = None) -> torch.Tensor:
    """n samples from G (switched to eval mode for the call), on the CPU: images as uint8
    (n, C, H, W), points (G.out_shape = (D,)) as float32 (n, D), never rescaled.

    The noise is drawn once for all n from `seed` (or given as `z`), so the result does not
    depend on `batch_size`.
    """
    parts = [x for x, _ in generate_chunks(G, n, labels, seed, batch_size, z)]
    images = kind_of(G.out_shape) == "images"
    return torch.cat(parts) if parts else torch.empty(0, *G.out_shape, dtype=torch.uint8 if images else torch.float32)


def load_discriminator(run_or_file, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The discriminator a checkpoint holds (a run folder's newest), in eval mode on `device`."""
    from .checkpoint import resolve
    from .config import Config
    from .models import build_discriminator

    path, state = resolve(run_or_file)
    cfg = Config.from_dict(state["config"], where=str(path))
    data = state["data"]
    D = build_discriminator(cfg.model, tuple(data["shape"]), data["num_classes"])
    if "D" not in state["models"]:
        raise UserError(f"{path} is a slim checkpoint (the generator only, kept for sampling); the discriminator is in "
                        f"the run's newest checkpoint: give the run folder")
    try:
        D.load_state_dict(state["models"]["D"])
    except (RuntimeError, KeyError) as e:
        raise UserError(f"{path}: no discriminator weights that fit model {cfg.model.arch!r} ({e})") from None
    return D.to(device).eval()


def d_scores(D: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None,
             batch_size: int = 500) -> torch.Tensor:
    """D's probability of "real" for uint8 images (N, C, H, W): sigmoid(logit), or 1 - p(fake) for a
    K+1-class D. Returns (N,) float32 on the CPU."""
    from .losses import real_probability

    device = next(D.parameters()).device
    was_training = D.training
    D.eval()
    out = []
    try:
        with torch.no_grad():  # a block, not a decorator: the same, and mutation testing reaches it
            for i in range(0, len(images), batch_size):
                x = from_uint8(images[i : i + batch_size].to(device))  # (B, C, H, W) in [-1, 1]
                y = labels[i : i + batch_size].to(device) if labels is not None else None
                out.append(real_probability(D(x, y)).cpu())
    finally:
        D.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def top_k_by_d(G: torch.nn.Module, D: torch.nn.Module, k: int, m: int, labels: torch.Tensor | None = None,
               seed: int = 0, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Generate m samples (labels: (m,) or None) and keep the k that D scores most real, best first.
    Returns (images uint8 (k, C, H, W), their labels (k,) or None, their scores (k,))."""
    if not 1 <= k <= m:
        raise UserError(f"--top-k-by-d {k} --from {m}: need 1 <= K <= M")
    if kind_of(G.out_shape) != "images":
        raise UserError("--top-k-by-d works on image generators only")
    images = generate(G, m, labels, seed=seed, batch_size=batch_size)  # (m, C, H, W) uint8
    scores = d_scores(D, images, labels, batch_size)  # (m,)
    order = torch.argsort(scores, descending=True, stable=True)[:k]
    return images[order], (labels[order] if labels is not None else None), scores[order]
