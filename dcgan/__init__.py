"""dcgan: train, sample and measure DCGAN and conditional DCGAN models."""

from .version import __version__  # noqa: F401


def load_generator(run_or_checkpoint, device="cpu"):
    """Load a generator in eval mode → (G, info), from a run folder (its newest checkpoint), a
    checkpoint file (both: the EMA generator when the run keeps one), or a folder written by
    `dcgan export --format hf` (config.json + model.safetensors)."""
    from .export import is_export_dir, load_export

    if is_export_dir(run_or_checkpoint):
        return load_export(run_or_checkpoint, device)
    from .checkpoint import load_generator as _load

    return _load(run_or_checkpoint, device)
