"""The analyzer's options, defined once for every command that analyzes faces (``analyze``,
``verify``, ``embed``, ``search``, ``video ...``), and the analyzer they build."""

from __future__ import annotations

import argparse

from facefuse.cli.values import non_negative_int, share
from facefuse.inference.backends import BACKENDS
from facefuse.tasks import TASK_ORDER

DETECTORS_HELP = ("face detector: mtcnn (default), haar, dlib_hog (needs dlib-bin), "
                  "full_frame (the image is the face)")


def examples(*lines: str) -> dict:
    """``add_parser`` keywords that end a command's ``--help`` with example command lines."""
    return {"epilog": "examples:\n" + "\n".join(f"  {line}" for line in lines),
            "formatter_class": argparse.RawDescriptionHelpFormatter}


def task_list(text: str) -> list[str]:
    """A comma-separated list of task names, each checked against the known tasks."""
    from facefuse.tasks import parse_task_list

    try:
        return parse_task_list(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_analyzer_options(p: argparse.ArgumentParser, *, tasks: bool = False,
                         margin: bool = True, identity_default: str = "auto") -> None:
    """Model, detector, device, backend and crop options of the face analyzer
    (:class:`facefuse.inference.analyzer.FaceAnalyzer`)."""
    g = p.add_argument_group("analyzer")
    g.add_argument("--model", default=None, metavar="PATH",
                   help="model (BASE.onnx or BASE.safetensors with BASE.json; default: the "
                        "shipped model)")
    if tasks:
        g.add_argument("--tasks", type=task_list, default=None, metavar="T1,T2",
                       help=f"tasks to report (default: every head of the model); valid: "
                            f"{', '.join((*TASK_ORDER, 'embedding'))}")
    g.add_argument("--detector", default="mtcnn", help=DETECTORS_HELP)
    g.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                   help="where the model runs (default auto: CUDA when what runs the model "
                        "has it, else the CPU)")
    g.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (default): the model's ONNX graph in ONNX Runtime; a PyTorch "
                        "checkpoint exported to ONNX Runtime on the CPU or run by PyTorch on a "
                        "GPU; torch or onnxruntime to choose")
    g.add_argument("--min-face", type=non_negative_int, default=24, metavar="PX",
                   help="smallest face side in pixels (default 24)")
    if margin:
        g.add_argument("--margin", type=share, default=None,
                       help="crop margin around the face's landmark box, a share of its side "
                            "(default: the model's own, 0.2 for the shipped model)")
    g.add_argument("--no-flip", action="store_true",
                   help="no test-time flip (faster; by default each face and its mirror image "
                        "are predicted and averaged)")
    g.add_argument("--identity", default=identity_default, metavar="auto|shipped|none|PATH",
                   help="where identity embeddings come from: shipped, the fused identity "
                        "networks in the package; none, the model's own identity head; a "
                        f"fused identity JSON; auto: shipped, unless --model has an identity "
                        f"head of its own (default {identity_default}; docs/MODEL_CARD.md)")
    _heads_option(g)


def _heads_option(g) -> None:
    g.add_argument("--identity-heads", default="auto", metavar="auto|shipped|none|PATH",
                   help="age, gender, race, emotion and attributes from heads on the identity "
                        "networks' features, fused with the model's own: shipped, the heads "
                        "in the package; none, the model's heads alone; a heads JSON; auto "
                        "(default): shipped with the shipped model, none with --model")


def build_analyzer(args: argparse.Namespace, tasks: list[str] | None = None,
                   landmark_refiner: str | None = None):
    """The :class:`FaceAnalyzer` the options of :func:`add_analyzer_options` describe
    (``tasks`` overrides ``--tasks``; ``landmark_refiner`` None: no refiner)."""
    from facefuse.inference.analyzer import FaceAnalyzer

    return FaceAnalyzer(tasks=tasks or getattr(args, "tasks", None), model=args.model,
                        detector=args.detector, device=args.device,
                        margin=getattr(args, "margin", None),
                        align=getattr(args, "align", False), min_face=args.min_face,
                        flip=not args.no_flip, backend=args.backend,
                        tta_margins=getattr(args, "tta_margins", None) or (),
                        landmark_refiner=landmark_refiner,
                        identity=None if args.identity == "none" else args.identity,
                        identity_heads=None if args.identity_heads == "none"
                        else args.identity_heads)
