"""The layering contract, checked by a machine (issue 32): the inference path and the model
runtime import nothing from training or experiment code, the core install runs every
inference command without torch, and no two modules of the package import each other."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "facefuse"

#: layer -> what it must never import (package-relative module prefixes)
FORBIDDEN = {
    # datasets, their readers and the training cache: below every model and pipeline
    "data": ("facefuse.inference", "facefuse.train", "facefuse.experiments",
             "facefuse.models", "facefuse.runtime", "facefuse.features",
             "facefuse.evaluation", "facefuse.gallery", "facefuse.batch",
             "facefuse.lifecycle", "facefuse.cli", "facefuse.service"),
    # face detectors: beside the data, below the face pipeline that runs them
    "detection": ("facefuse.inference", "facefuse.train", "facefuse.experiments",
                  "facefuse.models", "facefuse.data", "facefuse.features",
                  "facefuse.evaluation", "facefuse.gallery", "facefuse.cli",
                  "facefuse.service"),
    "runtime": ("facefuse.inference", "facefuse.train", "facefuse.experiments",
                "facefuse.models", "facefuse.data", "facefuse.features",
                "facefuse.evaluation", "facefuse.cli", "facefuse.service"),
    "inference": ("facefuse.train", "facefuse.experiments", "facefuse.data.augment",
                  "facefuse.features", "facefuse.evaluation", "facefuse.cli",
                  "facefuse.service"),
    "models": ("facefuse.train", "facefuse.experiments", "facefuse.inference",
               "facefuse.cli", "facefuse.service"),
    "gallery": ("facefuse.train", "facefuse.experiments", "facefuse.models",
                "facefuse.features", "facefuse.evaluation", "facefuse.cli",
                "facefuse.service"),
    # a model's life after training sits beside the experiments: it may use training and
    # inference code, and the command line calls it, never the other way
    "lifecycle": ("facefuse.experiments", "facefuse.cli", "facefuse.service"),
    # batch analysis runs the analyzer at scale (pyarrow and Ray only where used): an
    # inference-side package, never training code
    "batch": ("facefuse.train", "facefuse.experiments", "facefuse.models",
              "facefuse.features", "facefuse.evaluation", "facefuse.cli", "facefuse.service"),
    # the service sits on top, beside the command line: it serves the analyzer and the
    # galleries, never training code (the core install, without torch, must run it)
    "service": ("facefuse.train", "facefuse.experiments", "facefuse.models",
                "facefuse.features", "facefuse.evaluation", "facefuse.cli"),
}
#: the packages of the training extra, which the core must run without
TRAINING_PACKAGES = ("torch", "torchvision", "timm", "sklearn", "matplotlib", "onnx")
#: modules that hold the training side of an inference feature, imported only on demand
TRAINING_SIDE = {"facefuse.inference.torch_forward"}
#: the service's FastAPI modules: imported in the core run only where the serve extra is
SERVE_SIDE = {"facefuse.service.app", "facefuse.service.routes"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every facefuse module ``path`` imports, at the top or inside a function."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.startswith("facefuse")}


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def forbids(prefix: str, target: str) -> bool:
    """Whether ``prefix`` covers module ``target``; ``facefuse.cli`` covers the command
    line's modules, ``facefuse.cli_*`` included."""
    if target == prefix or target.startswith(prefix + "."):
        return True
    return prefix == "facefuse.cli" and target.startswith("facefuse.cli_")


def test_forbidding_the_command_line_covers_its_modules() -> None:
    assert forbids("facefuse.cli", "facefuse.cli.options")
    assert forbids("facefuse.cli", "facefuse.cli")
    assert not forbids("facefuse.train", "facefuse.training_notes")


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from facefuse.train.loop import evaluate\n")
    assert "facefuse.train.loop" in imports_of(bad)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(layer: str) -> None:
    broken = []
    for name, path in all_modules().items():
        if not name.startswith(f"facefuse.{layer}"):
            continue
        for target in sorted(imports_of(path)):
            if any(forbids(f, target) for f in FORBIDDEN[layer]):
                broken.append(f"{name} imports {target}")
    assert not broken, "\n".join(broken)


def test_no_two_modules_import_each_other() -> None:
    modules = all_modules()
    graph = {name: {t for t in imports_of(path) if t in modules and t != name}
             for name, path in modules.items()}
    cycles = sorted({tuple(sorted((a, b))) for a, targets in graph.items() for b in targets
                     if a in graph.get(b, set()) and not a.startswith(b + ".")
                     and not b.startswith(a + ".")})
    assert not cycles, cycles


CORE_RUN = textwrap.dedent("""
    import importlib, importlib.abc, json, pkgutil, sys

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)

    sys.meta_path.insert(0, Blocker())
    import facefuse.batch, facefuse.detection, facefuse.gallery, facefuse.inference
    import facefuse.runtime, facefuse.service
    names = ["facefuse", "facefuse.cli", "facefuse.cli.analyze", "facefuse.cli.video",
             "facefuse.cli.batch", "facefuse.tasks", "facefuse.weights",
             "facefuse.inference.landmark_refiner"]
    for package in (facefuse.inference, facefuse.runtime, facefuse.gallery, facefuse.service,
                    facefuse.detection, facefuse.batch):
        names += [m.name for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")
                  if m.name not in SKIP]
    for name in names:
        importlib.import_module(name)
    from facefuse.cli import main
    codes = {c: main(c.split()) for c in COMMANDS}
    print(json.dumps({"codes": codes, "loaded": sorted(
        m for m in sys.modules if m.split(".")[0] in BLOCKED)}))
""")


def run_core(commands: list[str], cwd: Path, blocked: tuple[str, ...] = ()) -> dict:
    """Import the core modules and run ``commands`` in a fresh interpreter where the
    training extra's packages (and ``blocked`` ones) cannot be imported."""
    from facefuse.extras import SERVE_MODULES, installed

    serves = all(map(installed, SERVE_MODULES)) and not set(blocked) & set(SERVE_MODULES)
    skip = TRAINING_SIDE | (set() if serves else SERVE_SIDE)
    script = f"BLOCKED = {set(TRAINING_PACKAGES) | set(blocked)!r}\nSKIP = {skip!r}\n" \
             f"COMMANDS = {commands!r}\n" + CORE_RUN
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=cwd, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "stderr": done.stderr}


def test_inference_commands_run_without_the_training_extra(tmp_path: Path) -> None:
    from facefuse.assets import demo_image_path
    from facefuse.weights import shipped_model_path

    photo = str(demo_image_path())
    out = run_core([f"analyze --quiet --out {tmp_path / 'a.jsonl'} {photo}",
                    f"verify {photo} {photo}", f"embed --quiet {photo}",
                    f"search --quiet {photo} --gallery {photo.rsplit('/', 1)[0]}",
                    f"model card {shipped_model_path()}"], tmp_path)
    assert set(out["codes"].values()) == {0}, out
    assert out["loaded"] == []
    result = json.loads((tmp_path / "a.jsonl").read_text().splitlines()[0])
    assert len(result["faces"]) == 1 and result["faces"][0]["age"] > 0


def test_a_training_command_without_the_extra_says_so_in_one_line(tmp_path: Path) -> None:
    commands = ["train nothing.yaml", "export-onnx a b.onnx", "model average a b --out c",
                "model calibrate a --cache b", "model ship a --out b"]
    out = run_core(commands, tmp_path)
    assert out["codes"] == dict.fromkeys(commands, 2)
    lines = [ln for ln in out["stderr"].splitlines() if ln.strip()]
    assert lines == [
        f"facefuse: facefuse {name} needs the training extra (torch, torchvision, timm, "
        "sklearn, matplotlib, onnx missing): pip install 'facefuse[train]'"
        for name in ("train", "export-onnx", "model average", "model calibrate", "model ship")]
    assert not list(tmp_path.iterdir())  # nothing written


def test_serve_without_its_extra_says_so_in_one_line(tmp_path: Path) -> None:
    from facefuse.extras import SERVE_MODULES, installed

    out = run_core(["serve --port 0"], tmp_path, blocked=("fastapi",))
    assert out["codes"] == {"serve --port 0": 2}
    missing = [m for m in SERVE_MODULES if m == "fastapi" or not installed(m)]
    lines = [ln for ln in out["stderr"].splitlines() if ln.strip()]
    assert lines == [f"facefuse: facefuse serve needs the serve extra ({', '.join(missing)} "
                     f"missing): pip install 'facefuse[serve]'"]


def test_batch_without_its_extras_says_so_in_one_line(tmp_path: Path) -> None:
    from facefuse.assets import demo_image_path

    photo = str(demo_image_path())
    local = f"batch {photo} --out {tmp_path / 'o'}"
    on_ray = f"{local} --engine ray"
    out = run_core([local, on_ray], tmp_path, blocked=("pyarrow", "ray"))
    assert out["codes"] == {local: 2, on_ray: 2}
    lines = [ln for ln in out["stderr"].splitlines() if ln.strip()]
    assert lines == [
        "facefuse: facefuse batch needs the batch extra (pyarrow is not installed): pip "
        "install 'facefuse[batch]'",
        "facefuse: facefuse batch --engine ray needs the ray extra (ray is not installed): "
        "pip install 'facefuse[ray]'"]
    assert not (tmp_path / "o").exists()


def test_the_layout_report_counts_nothing_to_mend() -> None:
    """issue 36's layout, kept: no module over 500 lines, no function over 80, no upward
    import, no import cycle (``python tools/layout_report.py --list`` names them)."""
    from tests.scripts import load_script

    found = load_script("tools/layout_report.py").report(PACKAGE)
    assert not any(found.values()), {k: v for k, v in found.items() if v}


def test_the_layout_report_sees_each_kind(tmp_path: Path) -> None:
    from tests.scripts import load_script

    tool = load_script("tools/layout_report.py")
    pkg = tmp_path / "facefuse"
    (pkg / "data").mkdir(parents=True)
    (pkg / "inference").mkdir()
    for init in (pkg, pkg / "data", pkg / "inference"):
        (init / "__init__.py").write_text("")
    body = "\n".join(f"    x{i} = {i}" for i in range(90))
    (pkg / "data" / "a.py").write_text("from facefuse.inference import b\n\n\ndef f():\n"
                                       + body + "\n" + "\n" * 420)
    (pkg / "inference" / "b.py").write_text("from facefuse.data import a\n")
    found = tool.report(pkg)
    assert found["modules over 500 lines"] == ["facefuse.data.a (514)"]
    assert found["functions over 80 lines"] == ["facefuse.data.a.f (91)"]
    assert found["upward imports"] == ["facefuse.data.a -> facefuse.inference",
                                       "facefuse.data.a -> facefuse.inference.b"]
    assert found["import cycles"] == ["facefuse.data.a <-> facefuse.inference.b"]
