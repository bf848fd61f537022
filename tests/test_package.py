"""The package's shape: no import cycles, no prints outside the CLI, algorithms free of Ray,
modules small enough to read."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "distmeta"
MODULES = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
           for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at module level or inside functions, except under
    `if TYPE_CHECKING:` (annotations only)."""
    tree = ast.parse(path.read_text())
    hidden = {id(n) for block in ast.walk(tree)
              if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
              for n in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                      for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_no_import_cycles():
    graph = {name: {d for d in imports(path) if d in MODULES and d != name} for name, path in MODULES.items()}
    state: dict[str, int] = {}

    def visit(name, stack):
        state[name] = 1
        for dep in sorted(graph[name]):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join(stack[stack.index(dep):] + [name, dep])
            if dep not in state:
                visit(dep, stack + [name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


@pytest.mark.parametrize("layer", ["distmeta.algorithms", "distmeta.runners", "distmeta.tasks",
                                   "distmeta.models", "distmeta.config", "distmeta.experiment"])
def test_algorithms_runners_and_tasks_never_import_ray(layer):
    for name, path in MODULES.items():
        if name == layer or name.startswith(layer + "."):
            assert not {m for m in imports(path) if m.split(".")[0] == "ray"}, name


def test_library_code_logs_instead_of_printing():
    for name, path in MODULES.items():
        if name in ("distmeta.cli", "distmeta.console"):  # the command line's own output
            continue
        calls = [n for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"]
        assert not calls, f"{name} prints (line {calls[0].lineno}); use logging.getLogger(__name__)"


def test_no_module_is_too_long_to_read():
    lengths = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert max(lengths.values()) <= 350, sorted(lengths.items(), key=lambda kv: -kv[1])[:3]


@pytest.mark.slow
def test_a_built_wheel_holds_the_presets_and_the_shipped_searches(tmp_path):
    """What `pip install .` (not editable) gets: the wheel, unpacked and imported from a
    folder with no checkout, names every preset and shipped search and loads one."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    import zipfile

    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("distmeta", "envs"):
        shutil.copytree(PACKAGE.parent / folder, source / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PACKAGE.parent / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("distmeta-*.whl")
    zipfile.ZipFile(wheel).extractall(tmp_path / "installed")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import json, distmeta; from distmeta.loading import presets; "
            "from distmeta.search.loading import load_search, shipped_configs; "
            "print(json.dumps([distmeta.__file__, sorted(presets()), sorted(shipped_configs()), "
            "load_search('sinusoid_maml_asha').num_samples]))")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), "PYTHONPATH": str(tmp_path / "installed")}
    where, preset_names, search_names, samples = json.loads(subprocess.run(
        [sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, check=True, env=env).stdout)
    assert where.startswith(str(tmp_path / "installed"))
    assert preset_names == sorted(p.stem for p in (PACKAGE / "presets").glob("*.yaml"))
    assert search_names == sorted(p.stem for p in (PACKAGE / "tune_configs").glob("*.yaml")) and search_names
    assert samples > 0
