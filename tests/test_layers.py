"""One way down: find_rl's modules form layers, and every import (lazy ones inside functions included) points to the
same layer or a lower one; there is no import cycle. Read from the source with ``ast``; nothing is imported."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"find_rl": "find_rl", "envs": "find_rl.envs", "tuning": "find_rl.tuning"}

#: lowest first: a module's layer is its folder's (a module directly in find_rl/ is a command, on top). A new folder
#: must be placed here (the test fails for a module in an unplaced folder).
LAYERS = [
    ("core: settings, metric names, policy families' math, objectives (no Ray)",
     {"find_rl.core", "find_rl.policies", "find_rl.objectives"}),
    ("the frozen model, rewards, the embedded worlds", {"find_rl.diffusion", "find_rl.rewards", "find_rl.worlds"}),
    ("envs, Tune search spaces, RLlib hooks, scoring fresh samples", {"find_rl.envs", "find_rl.tuning", "find_rl.rllib", "find_rl.evaluation"}),
    ("one run, its artefacts, the baselines", {"find_rl.run", "find_rl.baselines"}),
    ("the comparison", {"find_rl.compare"}),
    ("commands (the modules directly in find_rl/, and find_rl.shapes: a command's old name)", {"find_rl.shapes"}),
]
#: commands that live in a world's folder (training that world's own model) sit with the commands
WORLD_COMMANDS = {"find_rl.worlds.shapes.train_base", "find_rl.worlds.scenes.train_model"}

def _modules() -> dict[str, Path]:
    out = {}
    for folder, pkg in FOLDERS.items():
        for f in (ROOT / folder).rglob("*.py"):
            parts = list(f.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = f
    return out


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    def resolve(name: str) -> str | None:
        while name:
            if name in modules:
                return name
            name = name.rpartition(".")[0]
        return None

    graph = {}
    for mod, f in modules.items():
        is_pkg = f.name == "__init__.py"
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = mod.split(".")[: len(mod.split(".")) - node.level + (1 if is_pkg else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for t in targets:
                r = resolve(t)
                if r and r != mod and not mod.startswith(r + "."):  # a module may import its own package
                    deps.add(r)
        graph[mod] = deps
    return graph


def _folder(module: str) -> str:
    """``find_rl.policies.flow`` -> ``find_rl.policies``; ``find_rl.train`` -> ``find_rl.train`` (a command)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _layer_of() -> dict[str, int]:
    by_folder = {folder: i for i, (_, folders) in enumerate(LAYERS) for folder in folders}
    top = len(LAYERS) - 1
    out = {}
    for m, f in _modules().items():
        folder = _folder(m)
        if m == "find_rl":
            out[m] = 0  # the package's __init__ (registers the env id; imports nothing of find_rl)
        elif m in WORLD_COMMANDS:
            out[m] = top
        elif folder in by_folder:
            out[m] = by_folder[folder]
        elif m.count(".") == 1 and f.name != "__init__.py" and f.parent.name == "find_rl":
            out[m] = top  # find_rl/<command>.py
    return out


def test_every_module_has_a_layer():
    layer = _layer_of()
    unplaced = sorted(set(_modules()) - set(layer))
    assert not unplaced, f"put these modules in a folder placed in a layer of tests/test_layers.py: {unplaced}"


def test_find_rl_holds_only_commands_at_the_top():
    top = sorted(f.name for f in (ROOT / "find_rl").glob("*.py"))
    assert top == ["__init__.py", "evaluate.py", "generate.py", "train.py", "tune.py"], top


def test_imports_point_down_or_sideways_only():
    layer = _layer_of()
    graph = _imports(_modules())
    up = [f"{m} ({LAYERS[layer[m]][0]}) imports {d} ({LAYERS[layer[d]][0]})"
          for m, deps in graph.items() for d in deps if m in layer and d in layer and layer[d] > layer[m]]
    assert not up, "imports that point up a layer:\n" + "\n".join(up)


def test_no_import_cycles():
    graph = _imports(_modules())
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", sorted(m for m, layer in _layer_of().items() if layer == 0))
def test_the_core_is_free_of_ray(module):
    graph = _imports(_modules())
    src = _modules()[module].read_text()
    assert "import ray" not in src and "from ray" not in src, module
    assert all(_layer_of()[d] == 0 for d in graph[module]), module


def test_no_module_outside_a_world_imports_it():
    """The world seam: outside ``find_rl/worlds/<name>/`` a world is reached through ``find_rl.worlds.get_world`` only
    (find_rl.shapes keeps two old names and is exempt)."""
    graph = _imports(_modules())
    leaks = [f"{m} imports {d}" for m, deps in graph.items() for d in deps
             if d.startswith("find_rl.worlds.") and not m.startswith(".".join(d.split(".")[:3]))
             and not m.startswith("find_rl.shapes")]
    assert not leaks, "go through find_rl.worlds.get_world:\n" + "\n".join(leaks)
