"""Training: read loop.py first."""

from .loop import Stopped, train

__all__ = ["Stopped", "train"]
