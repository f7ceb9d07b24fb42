"""Inception-v3 features of RGB images (FID, KID, Inception Score), through torch-fidelity.

    ex = load_inception("pt_inception-2015-12-05-6726825d.pth")   # a LOCAL file; nothing is downloaded
    feats, logits = ex.extract(images)                             # uint8 (N, 3, H, W) → (N, 2048), (N, 1008)

torch-fidelity's `FeatureExtractorInceptionV3` is the TF-compatible FID Inception (TF1 resize to 299x299
inside the model, pool3 features, unbiased logits for IS): the standard protocol given the standard
weights, which are read with `torch.load(weights_only=True)` (no pickle code runs) and handed to the
model (it never reaches the network). Without torchvision, which its package __init__ imports and
this extractor does not use, only the modules it needs are loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from .classifier import file_sha256
from .features import Extractor

EXPECTED_FILE = "pt_inception-2015-12-05-6726825d.pth"
ALT_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's name for the same graph
ENV = "DCGAN_INCEPTION_WEIGHTS"
INSTALL = "pip install dcgan[inception]"
INSTALL_NO_TORCHVISION = "pip install --no-deps torch-fidelity"
NEED_WEIGHTS = f"RGB images need --inception-weights PATH ({INSTALL})"
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_LOGITS = 1008

_LOCK = threading.Lock()
_MODULE: types.ModuleType | None = None  # torch-fidelity's Inception module, once imported


def _forget_fidelity(before: set[str]) -> None:
    """Take the torch_fidelity modules imported since `before` out of sys.modules."""
    for k in set(sys.modules) - before:
        if k.partition(".")[0] == "torch_fidelity":
            del sys.modules[k]


def _import_fidelity() -> tuple[types.ModuleType, str]:
    """torch-fidelity's Inception module and the package version; UserError when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    global _MODULE
    try:
        spec = importlib.util.find_spec("torch_fidelity")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"Inception FID needs torch-fidelity: {INSTALL} (where torchvision cannot be installed: "
                        f"{INSTALL_NO_TORCHVISION}; it needs only torch, numpy and pillow for this)")
    try:
        ver = version("torch-fidelity")
    except PackageNotFoundError:
        ver = "unknown"
    if _MODULE is not None:
        return _MODULE, ver
    name = "torch_fidelity.feature_extractor_inceptionv3"
    before = set(sys.modules)
    try:
        _MODULE = importlib.import_module(name)
        return _MODULE, ver
    except ModuleNotFoundError as e:
        if e.name is None or not e.name.startswith("torchvision"):
            raise UserError(f"torch-fidelity is installed but cannot be imported ({e}); {INSTALL}") from None
    # torchvision is missing: load the Inception module under a bare package object (no __init__),
    # then take the partial package out of sys.modules again so a later `import torch_fidelity` is honest
    _forget_fidelity(before)  # what the failed import left behind
    pkg = types.ModuleType("torch_fidelity")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    sys.modules["torch_fidelity"] = pkg
    try:
        _MODULE = importlib.import_module(name)
    except ImportError as e:
        raise UserError(f"torch-fidelity's Inception extractor cannot be imported without torchvision ({e}); "
                        f"{INSTALL}") from None
    finally:
        _forget_fidelity(before)
    return _MODULE, ver


@dataclass
class InceptionExtractor(Extractor):
    """The FID Inception-v3 as an extractor: pool3 features (2048) and unbiased logits (1008)."""

    model: torch.nn.Module = field(repr=False)
    sha256: str
    weights: str
    version: str
    input_size: int = INPUT_SIZE
    feature_dim: int = FEATURE_DIM

    kind, num_outputs, output_name, noun = "inception", NUM_LOGITS, "logits", "Inception features"
    max_batch = 50  # 299x299 activations: ~50 images are a few GB
    cache_dtype = np.float32  # the reference cache: 50,000 x 2048 features are 400 MB in float32

    @property
    def name(self) -> str:
        return f"inception-v3-fid (torch-fidelity {self.version})"

    def check_channels(self, shape: tuple[int, ...]) -> None:
        if shape[1] not in (1, 3):
            raise UserError(f"the Inception extractor reads RGB (or grey) images, got {shape[1]} channels")

    def resize_note(self, shape: tuple[int, ...]) -> str:
        grey = ", grey repeated to RGB" if shape[1] == 1 else ""
        return (f"{shape[2]}x{shape[3]}->{INPUT_SIZE}x{INPUT_SIZE} (bilinear, TF1-compatible, inside "
                f"torch-fidelity's model){grey}")

    def reference_resize(self, native: int, resolution: int) -> str:
        chain = [native] + ([resolution] if resolution != native else []) + [INPUT_SIZE]
        return "->".join(f"{s}x{s}" for s in chain) + " (last step inside the model)"

    def identity(self) -> dict[str, Any]:
        return {"weights_file": Path(self.weights).name, "input_size": [3, INPUT_SIZE, INPUT_SIZE],
                "feature": "pool3 (2048)", "feature_dim": FEATURE_DIM,
                "inception_score_logits": "logits_unbiased (1008 classes), softmax"}

    def cache_key(self, shape: tuple[int, ...]) -> dict[str, Any]:
        return {"v": 1, "channels": shape[0], "weights_sha256": self.sha256, "impl": self.name}

    def _forward(self, chunk: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.array(chunk)).to(self.device)  # uint8: the model scales it itself
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return self.model(x)


def load_inception(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> InceptionExtractor:
    """The FID Inception of torch-fidelity with the weights of a local file (or $DCGAN_INCEPTION_WEIGHTS),
    in eval mode on `device`."""
    weights = weights or os.environ.get(ENV)
    if not weights:
        raise UserError(f"{NEED_WEIGHTS}: the FID Inception weights {EXPECTED_FILE} "
                        f"(or torch-fidelity's {ALT_FILE}), also read from ${ENV}")
    path = Path(weights).expanduser()
    mod, ver = _import_fidelity()
    if not path.is_file():
        raise UserError(f"{path} does not exist: put the FID Inception weights {EXPECTED_FILE} (pytorch-fid's "
                        f"conversion of the 2015-12-05 Inception graph; torch-fidelity's {ALT_FILE} also fits) "
                        f"there, or give --inception-weights PATH / ${ENV}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a damaged or non-tensor pickle
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path} is not a readable weights file ({why}); expected the state dict "
                        f"{EXPECTED_FILE}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict; expected {EXPECTED_FILE}")
    with _LOCK:  # its weights loader, which would download, is handed `state` instead
        saved, mod.load_state_dict_from_url = mod.load_state_dict_from_url, lambda *a, **k: state
        try:
            model = mod.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
        except RuntimeError as e:
            raise UserError(f"{path}: the weights do not fit the FID Inception-v3 ({str(e).splitlines()[0]}); "
                            f"expected {EXPECTED_FILE}") from None
        finally:
            mod.load_state_dict_from_url = saved
    return InceptionExtractor(model=model.to(device).eval(), sha256=file_sha256(path), weights=str(path), version=ver)


def inception_score(logits: np.ndarray, splits: int = 10, seed: int = 2020) -> tuple[float, float]:
    """torch-fidelity's ISC (metric_isc.isc_features_to_metric): rows shuffled with seed 2020, softmax
    of the unbiased logits, exp(mean KL(p(y|x) || p(y))) per split; mean and std over the splits."""
    x = torch.from_numpy(np.asarray(logits, dtype=np.float64))
    n = len(x)
    x = x[np.random.RandomState(seed).permutation(n)]
    p, log_p = x.softmax(dim=1), x.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        pc, lc = p[i * n // splits : (i + 1) * n // splits], log_p[i * n // splits : (i + 1) * n // splits]
        q = pc.mean(dim=0, keepdim=True)
        scores.append((pc * (lc - q.log())).sum(dim=1).mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))
