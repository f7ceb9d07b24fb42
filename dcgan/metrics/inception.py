"""FID and Inception Score of RGB images on Inception-v3 features, through torch-fidelity.

    ex = load_inception("pt_inception-2015-12-05-6726825d.pth")   # a LOCAL file; nothing is downloaded
    feats, logits = ex.extract(images)                             # uint8 (N, 3, H, W) → (N, 2048), (N, 1008)
    evaluate_inception(images, data_cfg, weights=PATH)             # {"fid", "inception_score", "protocol", ...}

The network is torch-fidelity's `FeatureExtractorInceptionV3` (the TF-compatible FID Inception:
TF1-style bilinear resize to 299x299 inside the model, (x - 128) / 128, pool3 2048-d features for
FID/KID, unbiased 1008-way logits for IS), so numbers follow the standard FID protocol when the
standard weights (the 2015-12-05 Inception graph, converted: pytorch-fid's
pt_inception-2015-12-05-6726825d.pth or torch-fidelity's weights-inception-2015-12-05-6726825d.pth)
are given. The weights are read with `torch.load(weights_only=True)` and handed to the model, so
torch-fidelity never reaches the network and no pickle code runs.

torch-fidelity's package __init__ imports torchvision (for its CLIP/VGG/DINOv2 extractors and
datasets), which the Inception extractor itself does not use; where torchvision is absent
(`pip install --no-deps torch-fidelity`), only the modules the Inception extractor needs are loaded.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sys
import threading
import time
import types
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import UserError
from . import stats

EXPECTED_FILE = "pt_inception-2015-12-05-6726825d.pth"
ALT_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's name for the same graph
ENV = "DCGAN_INCEPTION_WEIGHTS"
INSTALL = "pip install dcgan[inception]"
INSTALL_NO_TORCHVISION = "pip install --no-deps torch-fidelity"
METRICS = ("fid", "kid", "inception_score")
DEFAULT_METRICS = ("fid", "inception_score")
INPUT_SIZE = 299
FEATURE_DIM = 2048
IS_SPLITS = 10
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
REFERENCE_CACHE_VERSION = 1

Log = Callable[[str], None]
_LOCK = threading.Lock()
_MODULE: types.ModuleType | None = None  # torch-fidelity's Inception module, once imported


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def need_weights_message() -> str:
    return f"RGB images need --inception-weights PATH ({INSTALL})"


def weights_path(explicit: str | os.PathLike | None = None) -> Path | None:
    """--inception-weights, else $DCGAN_INCEPTION_WEIGHTS, else None."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    return None


# ---- the implementation --------------------------------------------------------------------------

def _import_fidelity() -> tuple[types.ModuleType, str]:
    """torch-fidelity's Inception module and the package version; UserError when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    missing = UserError(f"Inception FID needs torch-fidelity: {INSTALL} (where torchvision cannot be installed: "
                        f"{INSTALL_NO_TORCHVISION}; it needs only torch, numpy and pillow for this)")
    try:
        spec = importlib.util.find_spec("torch_fidelity")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise missing
    try:
        ver = version("torch-fidelity")
    except PackageNotFoundError:
        ver = "unknown"
    global _MODULE
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
    for k in set(sys.modules) - before:  # what the failed import left behind
        if k == "torch_fidelity" or k.startswith("torch_fidelity."):
            del sys.modules[k]
    pkg = types.ModuleType("torch_fidelity")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    sys.modules["torch_fidelity"] = pkg
    try:
        mod = importlib.import_module(name)
    except ImportError as e:
        raise UserError(f"torch-fidelity's Inception extractor cannot be imported without torchvision ({e}); "
                        f"{INSTALL}") from None
    finally:
        for k in set(sys.modules) - before:
            if k == "torch_fidelity" or k.startswith("torch_fidelity."):
                del sys.modules[k]
    _MODULE = mod
    return mod, ver


def build_model(state_dict: dict | None, mod: types.ModuleType | None = None) -> torch.nn.Module:
    """torch-fidelity's FeatureExtractorInceptionV3 with `state_dict` (None: its random initialisation,
    for tests), features ['2048', 'logits_unbiased'], eval mode, on the CPU. Never downloads."""
    mod = mod or _import_fidelity()[0]
    cls = mod.FeatureExtractorInceptionV3
    with _LOCK:
        saved = mod.load_state_dict_from_url
        mod.load_state_dict_from_url = lambda *a, **k: {} if state_dict is None else state_dict
        if state_dict is None:
            cls.load_state_dict = lambda self, *a, **k: None
        try:
            model = cls("inception-v3-compat", ["2048", "logits_unbiased"])
        finally:
            mod.load_state_dict_from_url = saved
            if state_dict is None:
                del cls.load_state_dict
    return model.eval()


def write_random_weights(path: str | os.PathLike, seed: int = 0) -> Path:
    """A weights file of the right architecture and format with random weights (tests only: its
    features mean nothing)."""
    torch.manual_seed(seed)
    path = Path(path)
    model = build_model(None)
    with torch.no_grad():  # He init keeps the activations' scale through the 90-odd layers
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(model.state_dict(), path)
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class InceptionExtractor:
    model: torch.nn.Module = field(repr=False)
    sha256: str
    weights: str
    version: str
    input_size: int = INPUT_SIZE
    feature_dim: int = FEATURE_DIM

    @property
    def name(self) -> str:
        return f"inception-v3-fid (torch-fidelity {self.version})"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def check(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 4:
            raise UserError(f"images must be a 4-D array (N, C, H, W), got shape {tuple(shape)}")
        if shape[1] not in (1, 3):
            raise UserError(f"the Inception extractor reads RGB (or grey) images, got {shape[1]} channels")

    def resize_note(self, shape: tuple[int, ...]) -> str:
        grey = ", grey repeated to RGB" if shape[1] == 1 else ""
        return (f"{shape[2]}x{shape[3]}->{INPUT_SIZE}x{INPUT_SIZE} (bilinear, TF1-compatible, inside "
                f"torch-fidelity's model){grey}")

    @torch.no_grad()
    def extract(self, images, batch_size: int = 50) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, C, H, W) → pool3 features (N, 2048) and unbiased logits (N, 1008), float64."""
        from .features import as_uint8_images

        images = as_uint8_images(images)
        self.check(images.shape)
        feats, logits = [], []
        for i in range(0, len(images), max(1, batch_size)):
            x = torch.from_numpy(np.array(images[i : i + batch_size])).to(self.device)
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            f, lg = self.model(x)
            feats.append(f.double().cpu().numpy())
            logits.append(lg.double().cpu().numpy())
        if not feats:
            return np.zeros((0, FEATURE_DIM)), np.zeros((0, 1008))
        return np.concatenate(feats), np.concatenate(logits)

    def protocol(self, shape: tuple[int, ...] | None = None) -> dict[str, Any]:
        p = {"extractor": self.name, "extractor_sha256": self.sha256, "weights_file": Path(self.weights).name,
             "input_size": [3, INPUT_SIZE, INPUT_SIZE], "feature": "pool3 (2048)", "feature_dim": FEATURE_DIM,
             "inception_score_logits": "logits_unbiased (1008 classes), softmax"}
        if shape is not None:
            p["resize"] = self.resize_note(shape)
        return p


def load_inception(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> InceptionExtractor:
    """The FID Inception of torch-fidelity with the weights of a local file (or $DCGAN_INCEPTION_WEIGHTS)."""
    path = weights_path(weights)
    if path is None:
        raise UserError(f"{need_weights_message()}: the FID Inception weights {EXPECTED_FILE} "
                        f"(or torch-fidelity's {ALT_FILE}), also read from ${ENV}")
    mod, ver = _import_fidelity()
    if not path.is_file():
        raise UserError(f"{path} does not exist: put the FID Inception weights {EXPECTED_FILE} (pytorch-fid's "
                        f"conversion of the 2015-12-05 Inception graph; torch-fidelity's {ALT_FILE} also fits) "
                        f"there, or give --inception-weights PATH / ${ENV}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a damaged or non-tensor pickle
        raise UserError(f"{path} is not a readable weights file ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                        f"expected the state dict {EXPECTED_FILE}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict; expected {EXPECTED_FILE}")
    try:
        model = build_model(state, mod)
    except RuntimeError as e:
        raise UserError(f"{path}: the weights do not fit the FID Inception-v3 ({str(e).splitlines()[0]}); "
                        f"expected {EXPECTED_FILE}") from None
    model.to(device)
    return InceptionExtractor(model=model, sha256=_sha256(path), weights=str(path), version=ver)


# ---- metrics -------------------------------------------------------------------------------------

def parse_metrics(spec: str | Sequence[str] | None) -> list[str]:
    if spec is None:
        return list(DEFAULT_METRICS)
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [s for s in names if s]
    if names == ["all"]:
        return list(METRICS)
    if not names:
        raise UserError(f"--metrics is empty; with Inception choose from [{', '.join(METRICS)}] or all")
    bad = [s for s in names if s not in METRICS]
    if bad:
        raise UserError(f"metric {bad[0]!r} is not measured with Inception; choose from [{', '.join(METRICS)}] "
                        f"(comma-separated) or all")
    return list(dict.fromkeys(names))


def inception_score(logits: np.ndarray, splits: int = IS_SPLITS, seed: int = 2020) -> tuple[float, float]:
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


def _fid(a: np.ndarray, b: np.ndarray) -> float:
    """stats.fid; with fewer samples than the 2048 feature dimensions both covariances are
    rank-deficient, and a distance that is 0 up to rounding can come out slightly negative, which
    stats.fid refuses: then (only then) the value is 0."""
    try:
        return stats.fid(a, b)
    except ValueError as e:
        if "came out negative" in str(e) and min(len(a), len(b)) <= FEATURE_DIM:
            return 0.0
        raise


def reference_split(data_cfg, reference: str | None) -> str:
    """--reference, else 'test' where the dataset has one, else 'train' (image folders, CelebA, LSUN)."""
    from ..data.sources import SOURCES

    splits = SOURCES.get(data_cfg.dataset).splits
    if reference is None:
        return "test" if "test" in splits else "train"
    if reference not in splits:
        raise UserError(f"--reference {reference}: dataset {data_cfg.dataset} has only [{', '.join(splits)}]")
    return reference


def reference_features(ex: InceptionExtractor, data_cfg, split: str, n: int, resolution: int, *,
                       data_dir: str | None = None, batch_size: int = 50, log: Log = _stderr) -> dict[str, Any]:
    """Inception features/logits of n images of the real split (evaluate.reference_index), as an
    evaluation at `resolution` sees them; cached under <cache>/eval-reference/."""
    from ..data.prepare import cache_root, prepare, resize
    from .evaluate import read_reference_cache, reference_subset, write_reference_cache

    ds = prepare(replace(data_cfg, split=split), data_dir, log=log)
    if ds.kind != "images":
        raise UserError(f"dataset {data_cfg.dataset} holds points, not images; Inception metrics need images")
    n, index, selection = reference_subset(len(ds), n)
    native = ds.shape[1]
    chain = [native] + ([resolution] if resolution != native else []) + [INPUT_SIZE]
    resize_note = "->".join(f"{s}x{s}" for s in chain)
    key_src = json.dumps({"v": REFERENCE_CACHE_VERSION, "dataset": data_cfg.dataset, "split": split,
                          "selection": selection, "content_hash": ds.meta["content_hash"], "n": n,
                          "resolution": resolution, "channels": ds.shape[0], "weights_sha256": ex.sha256,
                          "impl": ex.name}, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    path = cache_root() / "eval-reference" / f"inception-{data_cfg.dataset}-{split}-n{n}-r{resolution}-{key}.npz"
    out = {"n": n, "content_hash": ds.meta["content_hash"], "cache": str(path), "resize": resize_note,
           "selection": selection}
    cached = read_reference_cache(path, ("features", "logits"), n)
    if cached is not None:
        log(f"reference {data_cfg.dataset}/{split} ({selection}): cached Inception features {path.name}")
        return {**out, **{k: v.astype(np.float64) for k, v in cached.items()}, "hit": True}
    log(f"reference {data_cfg.dataset}/{split} ({selection}): computing Inception features")
    images = np.asarray(ds.images[index])
    if resolution != native:
        images = resize(images, resolution)
    feats, logits = ex.extract(images, batch_size)
    write_reference_cache(path, features=feats.astype(np.float32), logits=logits.astype(np.float32))
    # what a cache hit would return (float32 round trip), so a first and a cached run agree exactly
    return {**out, "features": feats.astype(np.float32).astype(np.float64),
            "logits": logits.astype(np.float32).astype(np.float64), "hit": False}


def evaluate_inception(images, data_cfg, *, extractor: InceptionExtractor | None = None,
                       weights: str | os.PathLike | None = None, metrics: str | Sequence[str] | None = None,
                       reference: str | None = None, seed: int = 0, data_dir: str | None = None,
                       batch_size: int = 50, device: str | torch.device = "cpu",
                       log: Log = _stderr) -> dict[str, Any]:
    """FID / IS (/ KID) of uint8 images (N, C, H, W) against the real data `data_cfg` names."""
    t0 = time.perf_counter()
    wanted = parse_metrics(metrics)
    if isinstance(images, torch.Tensor):
        images = images.cpu().numpy()
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise UserError(f"images must be uint8, got {images.dtype}")
    ex = extractor or load_inception(weights, device)
    ex.check(images.shape)
    n_fake = len(images)
    if n_fake < 2 and ("fid" in wanted or "kid" in wanted):
        raise UserError(f"FID/KID need at least 2 samples, got {n_fake}; raise --n")
    if n_fake < 1:
        raise UserError("there are no images to evaluate")
    split = reference_split(data_cfg, reference)
    ref = None
    if "fid" in wanted or "kid" in wanted:
        ref = reference_features(ex, data_cfg, split, n_fake, images.shape[2], data_dir=data_dir,
                                 batch_size=batch_size, log=log)
        if ref["n"] < 2:
            raise UserError(f"FID/KID need at least 2 reference images, the reference has {ref['n']}")
    log(f"extracting Inception features of {n_fake} images")
    fake_f, fake_l = ex.extract(images, batch_size)
    result: dict[str, Any] = {}
    for m in wanted:
        log(f"computing {m}")
        if m == "fid":
            result["fid"] = _fid(fake_f, ref["features"])
        elif m == "kid":
            mean, std = stats.kid(fake_f, ref["features"], subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=seed)
            result["kid"] = {"mean": mean, "std": std, "subsets": KID_SUBSETS,
                             "subset_size": min(KID_SUBSET_SIZE, n_fake, ref["n"])}
        elif m == "inception_score":
            splits = min(IS_SPLITS, n_fake)
            mean, std = inception_score(fake_l, splits)
            result["inception_score"] = {"mean": mean, "std": std, "splits": splits}
    result["protocol"] = {
        **ex.protocol(images.shape),
        "metrics": wanted,
        "n_fake": n_fake,
        "n_real": ref["n"] if ref else 0,
        "reference": ({"dataset": data_cfg.dataset, "split": split, "images": ref["selection"],
                       "content_hash": ref["content_hash"], "resize": ref["resize"] + " (last step inside the model)"}
                      if ref else None),
        "fake_resolution": [int(s) for s in images.shape[1:]],
        "seed": seed,
        "inception_score_splits": min(IS_SPLITS, n_fake),
        **({"note": f"n_fake {n_fake} <= {FEATURE_DIM} feature dimensions: rank-deficient covariances, FID biased "
                    f"high; the usual protocol takes 10,000 or 50,000 images"} if n_fake <= FEATURE_DIM else {}),
    }
    if ref:
        result["reference_cache"] = {"path": ref["cache"], "hit": ref["hit"]}
    result["elapsed_s"] = time.perf_counter() - t0
    return result
