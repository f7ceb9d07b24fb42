"""The package's imports point one way (docs/DESIGN.md):

    base      config, errors, registry, device, files, images, progress
      ↑
    library   models, data, losses, augment, checkpoint, sampling, interpolate, toy (its data, measures, plots)
      ↑
    engines   training, metrics (metrics never imports training), toy.monitor
      ↑
    commands  cli, eval_cli, report, export, bench, experiment, the package's own __init__/__main__

Every import counts, also one inside a function, since it runs all the same. A module may import its
own layer or a lower one, and no import cycle exists anywhere."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dcgan"

LAYERS = [  # (layer, module-name prefixes); the longest matching prefix decides
    (0, ["dcgan.config", "dcgan.errors", "dcgan.registry", "dcgan.device", "dcgan.files", "dcgan.images",
         "dcgan.progress"]),
    (1, ["dcgan.models", "dcgan.data", "dcgan.losses", "dcgan.augment", "dcgan.checkpoint", "dcgan.sampling", "dcgan.interpolate",
         "dcgan.toy"]),
    (2, ["dcgan.training", "dcgan.metrics", "dcgan.toy.monitor"]),
    (3, ["dcgan.cli", "dcgan.eval_cli", "dcgan.report", "dcgan.export", "dcgan.bench", "dcgan.experiment", "dcgan.sweep",
         "dcgan.__main__", "dcgan"]),
]


def layer_of(module: str) -> int:
    best = max(((len(p), layer) for layer, prefixes in LAYERS for p in prefixes
                if module == p or module.startswith(p + ".")), default=None)
    assert best is not None, f"{module} has no layer: add it to LAYERS (and to docs/DESIGN.md)"
    return best[1]


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports (relative imports resolved; `from p import m` is
    the module p.m when that is a module, else p)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in node.names]
        else:
            continue
        found |= {t for t in targets if t == "dcgan" or t.startswith("dcgan.")}
    return {t for t in found if t in known and t != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def test_every_import_points_to_the_same_or_a_lower_layer(graph):
    wrong = sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                   for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))
    assert wrong == []


def test_metrics_never_imports_training(graph):
    wrong = sorted(f"{a} imports {b}" for a, targets in graph.items() if a.startswith("dcgan.metrics")
                   for b in targets if b.startswith("dcgan.training"))
    assert wrong == []


def test_no_import_cycle(graph):
    # depth-first search; a back edge closes a cycle, reported as the path around it
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


def test_the_checker_sees_relative_lazy_and_cyclic_imports(tmp_path):
    """The walker itself: a relative import inside a function is found, and a two-module cycle is."""
    pkg = tmp_path / "dcgan"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "data" / "b.py").write_text("from ..data import a\nfrom .. import errors\n")
    (pkg / "errors.py").write_text("")
    known = {"dcgan", "dcgan.data", "dcgan.data.a", "dcgan.data.b", "dcgan.errors"}
    assert imports_of("dcgan.data.a", pkg / "data" / "a.py", known) == {"dcgan.data.b"}
    assert imports_of("dcgan.data.b", pkg / "data" / "b.py", known) == {"dcgan.data.a", "dcgan.errors"}
