"""Batches sliced on the device from a dataset held there as it is cached: uint8 images are
scaled to [-1, 1] per batch; float points (synthetic 2-D data) are used as they are.

The data order is a pure function of (seed, step): epoch e visits the images in the order of
a permutation drawn from a generator seeded with (seed, e), so a resumed run sees exactly the
batches an uninterrupted one would, with no loader state to save.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError


class DeviceBatches:
    def __init__(self, images: np.ndarray, labels: np.ndarray, batch: int, seed: int, device: torch.device):
        if len(images) < batch:
            raise UserError(
                f"the dataset has {len(images)} images, fewer than one batch of {batch}; "
                f"lower train.batch or add data"
            )
        self.images = torch.from_numpy(np.array(images)).to(device)  # (N, C, H, W) uint8 or (N, D) float32; a copy of the (read-only) cache
        self.scale = self.images.dtype == torch.uint8  # uint8 images → [-1, 1]; float data is never rescaled
        self.labels = torch.from_numpy(np.array(labels)).to(device)  # (N,) int64
        self.batch, self.seed, self.device = batch, seed, device
        self.steps_per_epoch = len(images) // batch  # the last partial batch of an epoch is dropped
        self._epoch, self._perm = -1, None

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of image indices for one epoch, (N,) int64 on the device."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.images), generator=g).to(self.device)

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number `step`: x (B, C, H, W) float in [-1, 1] (images) or (B, D) float (points), y (B,) int64."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, self.order(epoch)
        idx = self._perm[i * self.batch : (i + 1) * self.batch]
        x = self.images[idx].float().div_(127.5).sub_(1.0) if self.scale else self.images[idx].float()
        return x, self.labels[idx]
