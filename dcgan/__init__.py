"""dcgan: train, sample and measure DCGAN and conditional DCGAN models."""

__version__ = "0.1.0"


def load_generator(run_or_checkpoint, device="cpu"):
    """Load the (EMA) generator of a run folder or checkpoint, in eval mode. Returns (G, info)."""
    from .checkpoint import load_generator as _load

    return _load(run_or_checkpoint, device)
