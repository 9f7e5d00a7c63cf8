"""The package's layering, read from its import graph: data flows one way (ARCHITECTURE.md).

Every ``import`` and ``from ... import`` statement counts, at module level or inside a
function, so a lazy import cannot hide a dependency on a higher layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPOSITORY

PACKAGE = REPOSITORY / "fastsurface"

_LEAVES = {"errors", "results", "_version"}
_BASE = _LEAVES | {"_support"}
# The seed model and data come first in the data flow (data -> model -> plane -> engine).
_SEED_INPUTS = {"seed.model", "seed.data"}
# What each part of the package may import besides itself. A part is a sub-package, or a
# top-level module; `seed` is split because its model and data come first and its naive
# loop and benchmark come after the engine.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "results": set(),
    "_version": set(),
    "_support": {"errors", "results"},
    "seed": set(),  # the sub-package's own __init__: a docstring
    "seed.model": {"errors"},
    "seed.data": {"errors", "_support"},
    "planes": _BASE | _SEED_INPUTS,
    "engine": _BASE | _SEED_INPUTS | {"planes"},
    "analysis": _BASE | _SEED_INPUTS | {"planes", "engine"},
    "runs": _BASE | _SEED_INPUTS | {"planes", "engine"},
    "views": _BASE,
    "seed.naive": _BASE | {"planes", "engine"},
    "seed.bench": _BASE | {"planes", "engine", "seed.model", "seed.data", "seed.naive"},
    "compat": _BASE | {"planes", "engine"},
    # `fastsurface bench --model`: real models on the engine, with the seed bench's ceilings and table.
    "model_bench": _BASE | {"planes", "engine", "seed.bench"},
    # `fastsurface bench --basins`: the seed's basin map (train_many), with the seed bench's ceiling and table.
    "basin_bench": _BASE | _SEED_INPUTS | {"engine", "analysis", "seed.bench"},
    "cli": _BASE
    | {"planes", "engine", "analysis", "runs", "views", "seed", "seed.model", "seed.data"}
    | {"seed.naive", "seed.bench", "model_bench", "basin_bench", "explorer", "__init__"},
    "explorer": _BASE
    | {"planes", "engine", "analysis", "runs", "views", "seed", "seed.model", "seed.data", "__init__"},
}


_ROOTS = {part.split(".")[0] for part in ALLOWED}


def _part(module: str) -> str:
    """The layer a dotted module name (below ``fastsurface``) belongs to."""
    parts = module.split(".")
    if parts[0] == "seed" and len(parts) > 1:
        return f"seed.{parts[1]}"
    return parts[0]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__").removesuffix("__init__")
        if name and name != "__main__":
            found[name] = path
    return found


def _imported(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports, relative to ``fastsurface``; the
    package itself (``import fastsurface``: its public API, the top layer) is ``__init__``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    inside = {"__init__" if name == "fastsurface" else name.removeprefix("fastsurface.") for name in names}
    return {name for name in inside if name == "__init__" or name.split(".")[0] in _ROOTS}


MODULES = _modules()


def test_every_module_has_a_layer():
    assert {_part(name) for name in MODULES} <= set(ALLOWED)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_higher_layer(module):
    own = _part(module)
    wrong = {name for name in _imported(MODULES[module]) if _part(name) not in ALLOWED[own] | {own}}
    assert not wrong, f"fastsurface.{module} ({own}) imports {sorted(wrong)}, above its layer"


@pytest.mark.parametrize("module", sorted(_LEAVES))
def test_leaves_import_nothing_of_the_package(module):
    assert _imported(MODULES[module]) == set()


def test_views_do_not_reach_into_the_engine():
    """Drawing a figure or loading a file never pulls in the engine, let alone its internals."""
    for name, path in MODULES.items():
        if _part(name) in {"views", "results"}:
            assert not {n for n in _imported(path) if _part(n) in {"engine", "analysis", "runs"}}, name
