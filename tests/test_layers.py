"""One way down: find_rl's modules form layers, and every import (lazy ones inside functions included) points to the
same layer or a lower one; there is no import cycle. Read from the source with ``ast``; nothing is imported."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"find_rl": "find_rl", "envs": "find_rl.envs", "tuning": "find_rl.tuning"}

#: lowest first. A new module must be placed here (the test fails for an unplaced one).
LAYERS = [
    ("core: settings, policy math, calibration, flows (no Ray)",
     {"find_rl", "find_rl.fields", "find_rl.settings", "find_rl.keys", "find_rl.policy_math", "find_rl.calibration",
      "find_rl.anchor", "find_rl.latent_mean", "find_rl.progress", "find_rl.diversity", "find_rl.observation", "find_rl.amortized",
      "find_rl.flow", "find_rl.flow_spline", "find_rl.replay", "find_rl.objectives", "find_rl.export", "find_rl.checkpoints", "find_rl.tuning", "find_rl.tuning.spaces",
      "find_rl.compare.settings", "find_rl.compare.stats"}),
    ("models, sampler, rewards, the shapes world",
     {"find_rl.models", "find_rl.sampler", "find_rl.rewards", "find_rl.image_reward", "find_rl.hps", "find_rl.metrics",
      "find_rl.report", "find_rl.random_weights", "find_rl.preference_weights", "find_rl.released_weights",
      "find_rl.shapes", "find_rl.shapes.world", "find_rl.shapes.detector", "find_rl.shapes.text_encoder",
      "find_rl.shapes.pipeline", "find_rl.worlds", "find_rl.worlds.scenes", "find_rl.worlds.scenes.geometry",
      "find_rl.worlds.scenes.grammar", "find_rl.worlds.scenes.splits", "find_rl.worlds.scenes.render",
      "find_rl.worlds.scenes.detect", "find_rl.worlds.scenes.scorer", "find_rl.worlds.scenes.adversarial",
      "find_rl.worlds.scenes.pipeline", "find_rl.worlds.scenes.baseline"}),
    ("envs, RLlib hooks, Ray actors, scoring",
     {"find_rl.envs", "find_rl.envs.noise_bandit", "find_rl.connectors", "find_rl.learner", "find_rl.noise_module",
      "find_rl.flow_module", "find_rl.config", "find_rl.scorers", "find_rl.ray_session", "find_rl.scoring"}),
    ("one run, its artefacts, the baselines",
     {"find_rl.run", "find_rl.artifacts", "find_rl.tracking", "find_rl.baselines", "find_rl.baselines.best_of_n", "find_rl.baselines.cem",
      "find_rl.baselines.paper_loop", "find_rl.baselines.ddpo", "find_rl.baselines.scoring"}),
    ("the comparison", {"find_rl.compare", "find_rl.compare.methods", "find_rl.compare.cache", "find_rl.compare.report"}),
    ("commands", {"find_rl.train", "find_rl.tune", "find_rl.generate", "find_rl.evaluate", "find_rl.compare.cli",
                  "find_rl.compare.__main__", "find_rl.shapes.train_base",
                  "find_rl.worlds.scenes.train_model"}),
]


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


def _layer_of() -> dict[str, int]:
    return {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}


def test_every_module_has_a_layer():
    layer = _layer_of()
    unplaced = sorted(set(_modules()) - set(layer))
    assert not unplaced, f"place these modules in a layer of tests/test_layers.py: {unplaced}"


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


@pytest.mark.parametrize("module", ["find_rl.policy_math", "find_rl.calibration", "find_rl.settings", "find_rl.fields",
                                    "find_rl.amortized", "find_rl.observation", "find_rl.progress", "find_rl.latent_mean"])
def test_the_core_is_free_of_ray(module):
    graph = _imports(_modules())
    src = _modules()[module].read_text()
    assert "import ray" not in src and "from ray" not in src, module
    assert all(_layer_of()[d] == 0 for d in graph[module]), module
