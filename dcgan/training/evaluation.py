"""Evaluation during training: FID (and label accuracy, class coverage) of the EMA generator every
`eval.every_kimg` thousand real images, the best-FID checkpoint, and the stop at `eval.target_fid`.

Features come from the project's classifier: the shipped one for MNIST, else the one
'dcgan eval train-classifier' trained on the run's data (looked up in the cache at start)."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch

from ..config import Config
from ..errors import UserError


class Evaluator:
    def __init__(self, cfg: Config, kind: str, log: Callable[[str], None]):
        if kind != "images":
            raise UserError("eval.every_kimg measures image models; toy runs report their own measures every tick "
                            "(set eval.every_kimg=0)")
        from ..data.sources import SOURCES
        from ..metrics.features import load_classifier

        # fail at start, not after an hour, if there is no extractor: the shipped MNIST classifier, or
        # one 'dcgan eval train-classifier' trained on this data (found in the cache)
        ex = load_classifier(cfg.data)
        self.weights = ex.weights
        self.cfg, self.dataset, self.data_dir_log = cfg.eval, cfg.data.dataset, log
        self.data = cfg.data
        self.reference = cfg.eval.reference
        if self.reference not in SOURCES.get(cfg.data.dataset).splits:
            self.reference = "train"
            log(f"eval: {cfg.data.dataset} has no {cfg.eval.reference} split; FID is measured against train")
        if ex.arch != "mnist-cnn-v1":
            log(f"eval: features from {ex.name} (sha256 {ex.sha256[:12]}…, trained on {ex.dataset}, "
                f"accuracy {ex.record.get('test_accuracy')})")
        self.conditional = cfg.model.conditional
        self.next_kimg = cfg.eval.every_kimg
        self.best_fid, self.best_step = math.inf, None
        self.time_to_target_s = None

    def due(self, images_seen: int) -> bool:
        return images_seen >= self.next_kimg * 1000

    def run(self, G: torch.nn.Module, step: int, images_seen: int, elapsed_s: float) -> dict[str, Any]:
        from ..metrics.evaluate import fid_of_generator

        while self.next_kimg * 1000 <= images_seen:
            self.next_kimg += self.cfg.every_kimg
        metrics = ("fid", "label_accuracy", "classes") if self.conditional else ("fid", "classes")
        t0 = time.perf_counter()
        result = fid_of_generator(G, n=self.cfg.n, reference=self.reference, seed=0, dataset=self.dataset,
                                  metrics=metrics, data=self.data, weights=self.weights)
        result.pop("elapsed_s", None)
        result.pop("reference_cache", None)
        eval_s = time.perf_counter() - t0
        line = {"kind": "eval", "step": step, "images_seen": images_seen, "elapsed_s": elapsed_s + eval_s,
                "eval_s": eval_s, "time": time.time(), "generator": "ema", **result}
        acc = result.get("label_accuracy", {}).get("accuracy")
        self.data_dir_log(f"eval at step {step}: FID {result['fid']:.3f}"
                          + (f", label accuracy {acc:.3f}" if acc is not None else "")
                          + f", {result['classes']['classes_covered']} classes covered ({eval_s:.1f} s)")
        return line

    def is_best(self, line: dict[str, Any]) -> bool:
        if line["fid"] < self.best_fid:
            self.best_fid, self.best_step = line["fid"], line["step"]
            return True
        return False

    def reached_target(self, line: dict[str, Any]) -> bool:
        if self.cfg.target_fid > 0 and line["fid"] <= self.cfg.target_fid:
            self.time_to_target_s = line["elapsed_s"]
            return True
        return False

    def warnings(self, line: dict[str, Any], num_classes: int) -> list[str]:
        c = line["classes"]
        k = len(c["histogram"])
        if c["classes_covered"] < k:
            return [f"class histogram collapsing: the classifier finds only {c['classes_covered']} of {k} classes "
                    f"in the samples (KL from uniform {c['kl_from_uniform']:.2f}); mode collapse is under way"]
        return []

    def state(self) -> dict[str, Any]:
        return {"next_kimg": self.next_kimg, "best_fid": self.best_fid, "best_step": self.best_step}

    def load(self, state: dict[str, Any]) -> None:
        if state:
            self.next_kimg, self.best_fid, self.best_step = state["next_kimg"], state["best_fid"], state["best_step"]

    def summary(self) -> dict[str, Any]:
        return {"best_fid": None if math.isinf(self.best_fid) else self.best_fid, "best_step": self.best_step,
                "target_fid": self.cfg.target_fid or None, "time_to_target_s": self.time_to_target_s}
