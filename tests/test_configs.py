"""Every config in ``configs/``, with every profile it has, loads and builds its models, and a
forward pass on a tiny batch gives each head its width: a profile that names an unknown
key, a trunk option the trunk does not take, or a head the model cannot build fails here,
not hours into a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facefuse.config import load_config
from facefuse.config_files import config_document, profile_names
from facefuse.experiments import EXPERIMENTS
from facefuse.models.multitask import ModelSpec, build_model
from facefuse.train.mtl import MTLConfig, model_spec

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
IDENTITIES = 3  # the identity head's classes (the data's people, here a stand-in)
_built: dict[str, None] = {}  # specs already run, across the parametrised cases


def cases() -> list[tuple[str, str | None]]:
    out = []
    for path in sorted(CONFIGS.glob("*.yaml")):
        out += [(path.name, None), *((path.name, p) for p in profile_names(path))]
    return out


def config_class(name: str) -> type:
    kind = config_document(CONFIGS / name).get("kind", "mtl")
    return MTLConfig if kind == "mtl" else EXPERIMENTS.get(kind).config_class


def run_spec(spec: ModelSpec, size: int) -> None:
    """Build ``spec`` and run two random images of side ``size`` through it (once per spec)."""
    key = json.dumps([spec.to_dict(), size], sort_keys=True, default=str)
    if key in _built:
        return
    model = build_model(spec).eval()
    with torch.no_grad():
        images = torch.rand(2, 3, size, size)
        # a trunk trained from a start block takes its frozen prefix's map
        out = model(model.trunk.prefix(images) if getattr(model.trunk, "start_block", 0)
                    else images)
    for task, head in spec.heads.items():
        assert out[task].shape[0] == 2 and torch.isfinite(out[task]).all(), task
        if head.kind in ("mlp", "branched"):  # cosine and distribution heads map on
            assert out[task].reshape(2, -1).shape[1] == head.outputs, task
    _built[key] = None


def mtl_specs(cfg: MTLConfig) -> list[tuple[ModelSpec, int]]:
    return [(model_spec(cfg, IDENTITIES), cfg.image_size)]


def li_zhu_specs(cfg) -> list[tuple[ModelSpec, int]]:
    from facefuse.experiments.li_zhu import extractor_spec

    size = cfg.extractor.image_size
    return [(extractor_spec(cfg.extractor, s, IDENTITIES), size) for s in cfg.sources]


def li_zhu_fusion_heads(cfg) -> None:
    """Every fusion row's head on features as wide as the extractors'."""
    from facefuse.experiments.li_zhu import extractor_spec
    from facefuse.features.fusion import FusionHead

    widths = {s: build_model(extractor_spec(cfg.extractor, s, 2)).trunk.feature_dim
              for s in cfg.sources}
    for target in cfg.targets:
        for _, sources, method in cfg.fusion_rows(target):
            head = FusionHead(method, [widths[s] for s in sources], IDENTITIES,
                              cfg.probe.hidden, cfg.probe.dropout).eval()
            with torch.no_grad():
                out = head([torch.randn(2, widths[s]) for s in sources])
            assert out.shape == (2, IDENTITIES)


def dmm_specs(cfg) -> list[tuple[ModelSpec, int]]:
    from facefuse.experiments.dmm_cnn import VARIANTS
    from facefuse.experiments.dmm_cnn import model_spec as dmm_spec

    shapes = {VARIANTS[v][:2] for v in cfg.variants}
    return [(dmm_spec(cfg, branches, landmarks), cfg.image_size)
            for branches, landmarks in sorted(shapes)]


def mtl_compare_specs(cfg) -> list[tuple[ModelSpec, int]]:
    from facefuse.experiments.mtl_compare import run_configs

    base = load_config(MTLConfig, CONFIGS.parent / cfg.base, list(cfg.base_overrides),
                       cfg.base_profile)
    return [(model_spec(run, IDENTITIES), run.image_size)
            for *_, run in run_configs(cfg, base) if run.seed == cfg.seeds[0]]


SPECS = {"mtl": mtl_specs, "li_zhu": li_zhu_specs, "dmm_cnn": dmm_specs,
         "mtl_compare": mtl_compare_specs}


def test_every_config_file_is_covered() -> None:
    kinds = {config_document(p).get("kind", "mtl") for p in CONFIGS.glob("*.yaml")}
    assert kinds <= set(SPECS), f"no model builder here for kinds {kinds - set(SPECS)}"
    names = {name for name, _ in cases()}
    assert {"mtl.yaml", "li_zhu.yaml", "dmm_cnn.yaml", "mtl_compare.yaml"} <= names


@pytest.mark.parametrize(("name", "profile"), cases(),
                         ids=[f"{n}:{p or '-'}" for n, p in cases()])
def test_config_and_profile_load_and_build_their_models(name: str, profile: str | None
                                                         ) -> None:
    cfg = load_config(config_class(name), CONFIGS / name, profile=profile)
    kind = getattr(cfg, "kind", "mtl")
    specs = SPECS[kind](cfg)
    assert specs, f"{name} {profile}: no model to build"
    for spec, size in specs:
        run_spec(spec, size)
    if kind == "li_zhu":
        li_zhu_fusion_heads(cfg)


def test_the_shipped_profiles_inherit_what_they_do_not_change() -> None:
    gpu = load_config(MTLConfig, CONFIGS / "mtl.yaml", profile="shipped_gpu")
    dldl = load_config(MTLConfig, CONFIGS / "mtl.yaml", profile="shipped_dldl")
    assert (dldl.detector_crop, dldl.center_crop, dldl.weighting) == (
        gpu.detector_crop, gpu.center_crop, gpu.weighting)
    assert dldl.sampling == {**gpu.sampling, "utkface": 1.5}
    assert dldl.task_weights == {**gpu.task_weights, "identity": 0.1}
    assert dldl.optim.lr == 0.001 and dldl.optim.epochs == 8 and dldl.age_head == "distribution"


def test_a_config_that_extends_a_shipped_one_keeps_its_kind_and_profiles(tmp_path: Path
                                                                         ) -> None:
    from facefuse.experiments import experiment_kind

    child = tmp_path / "mine.yaml"
    child.write_text(f"extends: {CONFIGS / 'dmm_cnn.yaml'}\nseeds: [0]\n"
                     "profiles:\n  gpu: {train: {batch_size: 64}}\n")
    assert experiment_kind(child) == "dmm_cnn"
    cfg = load_config(config_class("dmm_cnn.yaml"), child, profile="gpu")
    assert cfg.seeds == (0,) and cfg.train.batch_size == 64
    assert cfg.model.trunk == "mobilenetv3_large_100" and cfg.model.trunk_options == {}
    assert cfg.train.optim.epochs == 40  # the rest of the inherited profile


@pytest.mark.parametrize("command", ["train", "experiment"])
def test_quick_and_a_profile_together_are_a_usage_error(command: str, capsys) -> None:
    from facefuse.cli import main

    with pytest.raises(SystemExit) as exc:  # one profile a run: say efficientnet_quick
        main([command, str(CONFIGS / "mtl.yaml"), "--quick", "--profile", "efficientnet"])
    assert exc.value.code == 2
    assert "--profile: not allowed with argument --quick" in capsys.readouterr().err
