"""``facefuse analyze``, ``verify``, ``embed`` and ``search``: the analyzer on the command
line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from facefuse.cli.options import add_analyzer_options, build_analyzer, examples
from facefuse.cli.outputs import Written, annotation_names, counted, make_folder
from facefuse.cli.values import SETUP_ERRORS, positive_int, report
from facefuse.cli.video import add_frame_sampling, frame_sampling
from facefuse.inference.drawing import draw_faces
from facefuse.inference.rows import FaceRowWriter


def _analyzer(args: argparse.Namespace, tasks=None):
    # verify, embed and search report no landmarks: nothing to refine
    refiner = getattr(args, "landmark_refiner", "none")
    return build_analyzer(args, tasks, None if refiner == "none" else refiner)


def annotate(rgb: np.ndarray, result, out: Path) -> None:
    """Write :func:`draw_faces` of ``rgb`` to ``out`` (its folder made if missing)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_faces(rgb, result).save(out)


def cmd_analyze(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from facefuse.assets import demo_image_path
    from facefuse.data.images import load_rgb
    from facefuse.inference.analyzer import VIDEO_SUFFIXES, expand_inputs
    from facefuse.inference.video import VideoError, analyze_video

    try:
        analyzer = _analyzer(args)
        paths = list(expand_inputs(args.paths)) if args.paths else [demo_image_path()]
    except SETUP_ERRORS as exc:
        report(exc)
        return 2
    annotated = annotation_names(paths) if args.annotate else {}
    if args.annotate and not make_folder(args.annotate, f"annotations to {args.annotate}"):
        return 2
    if args.out and not make_folder(Path(args.out).parent, args.out):
        return 2
    try:
        out = open(args.out, "w", newline="") if args.out else sys.stdout
    except OSError as exc:
        print(f"facefuse: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    failures = faces = 0
    images = [p for p in paths if p.suffix.lower() not in VIDEO_SUFFIXES]
    videos = [p for p in paths if p.suffix.lower() in VIDEO_SUFFIXES]
    writer = FaceRowWriter(out, with_video=bool(videos)) if args.format == "csv" else None
    args.written = written = Written(args.out or "standard output", "photo result")
    try:
        bar = tqdm(total=len(images), unit="img", disable=args.quiet or len(images) < 2,
                   file=sys.stderr)
        results = analyzer.iter_analyze(images, batch_images=args.batch_images)
        for path, result in zip(images, results, strict=True):
            faces += len(result.faces)
            if result.error:
                failures += 1
                print(f"facefuse: {result.error}", file=sys.stderr)
            if writer is not None:
                for row in result.rows() or [{"source": result.source, "face": None}]:
                    writer.write({**row, "error": result.error})
            else:
                out.write(json.dumps(result.to_dict()) + "\n")
            written.add()
            if args.annotate and not result.error:
                annotate(load_rgb(path), result, Path(args.annotate) / annotated[path])
            bar.update(1)
        bar.close()
        written.what = "result"  # photos, then the faces of video frames

        def write_row(row: dict) -> None:
            writer.write(row)
            written.add()

        for video in videos:
            try:
                r = analyze_video(video, analyzer, **frame_sampling(args),
                                  records=None if writer else counted(out, written),
                                  on_face=write_row if writer else None)
                faces += r.faces
                print(f"{video}: {r.frames_sampled} frames, {r.faces} faces, "
                      f"{len(r.tracks)} tracks", file=sys.stderr)
            except VideoError as exc:
                failures += 1
                print(f"facefuse: {exc}", file=sys.stderr)
    finally:  # also on Ctrl-C: what was written stays a valid file
        if writer is not None:
            writer.close()
        if args.out:
            out.close()
    if not args.quiet:
        print(f"{len(paths)} input(s), {faces} face(s), {failures} failed", file=sys.stderr)
    return 1 if failures else 0


CROP_HINT = " (for photos that are already face crops, use --detector full_frame)"


def crop_hint(analyzer) -> str:
    """The hint for pre-cropped photos, after "no face found", where a detector looked."""
    from facefuse.detection.detectors import FullFrameDetector

    return "" if isinstance(analyzer.detector, FullFrameDetector) else CROP_HINT


def _largest_face(analyzer, path: str):
    face = analyzer.analyze(path).largest_face()
    if face is None:
        raise ValueError(f"{path}: no face found{crop_hint(analyzer)}")
    return face


def cmd_verify(args: argparse.Namespace) -> int:
    from facefuse.data.images import ImageError

    try:
        analyzer = _analyzer(args, tasks=["embedding"])
        fa, fb = (_largest_face(analyzer, p) for p in (args.a, args.b))
    except (*SETUP_ERRORS, ImageError) as exc:
        report(exc)
        return 2
    threshold = args.threshold if args.threshold is not None \
        else analyzer.verification_threshold
    score = float(np.asarray(fa.predictions["embedding"]) @ np.asarray(
        fb.predictions["embedding"]))
    print(json.dumps({"a": args.a, "b": args.b, "similarity": round(score, 4),
                      "threshold": round(threshold, 4), "same_person": score > threshold,
                      "found_by": [fa.found_by, fb.found_by]}))
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from facefuse.inference.analyzer import expand_inputs

    try:
        analyzer = _analyzer(args, tasks=["embedding"])
        paths = list(expand_inputs(args.paths))
    except SETUP_ERRORS as exc:
        report(exc)
        return 2
    paths = _photos_only(paths, "embed")
    if not paths:
        return 2
    from tqdm.auto import tqdm

    failures = faces = 0
    args.written = written = Written("standard output", "embedding")
    results = analyzer.iter_analyze(paths, batch_images=args.batch_images)
    for result in tqdm(results, total=len(paths), unit="img", file=sys.stderr,
                       disable=args.quiet or len(paths) < 2):
        for face in result.faces:
            print(json.dumps({"source": result.source, "face": face.index,
                              "box": [round(v, 1) for v in face.box],
                              "embedding": face.predictions["embedding"]}))
            written.add()
        faces += len(result.faces)
        if result.error:
            failures += 1
            print(f"facefuse: {result.error}", file=sys.stderr)
    if not args.quiet:
        print(f"{len(paths)} image(s), {faces} face(s), {failures} failed", file=sys.stderr)
    return 1 if failures else 0  # as analyze: the rest embedded, the failures reported


def _photos_only(paths: list[Path], command: str) -> list[Path]:
    """``paths`` without videos, saying on standard error how many were left out."""
    from facefuse.inference.analyzer import VIDEO_SUFFIXES

    videos = [p for p in paths if p.suffix.lower() in VIDEO_SUFFIXES]
    if videos:
        print(f"facefuse: {command} takes photos; {len(videos)} video(s) left out (`facefuse "
              f"video analyze` embeds the faces of videos)", file=sys.stderr)
    return [p for p in paths if p.suffix.lower() not in VIDEO_SUFFIXES]


def cmd_search(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from facefuse.inference.analyzer import expand_inputs
    from facefuse.inference.gallery import Gallery

    try:
        analyzer = _analyzer(args, tasks=["embedding"])
        queries = _photos_only(list(expand_inputs(args.queries)), "search")
        if not queries:
            return 2
        with tqdm(unit="img", file=sys.stderr, desc="gallery", disable=args.quiet) as bar:
            gallery = Gallery.from_folder(analyzer, args.gallery, args.batch_images,
                                          on_photo=lambda: bar.update(1))
    except SETUP_ERRORS as exc:
        hint = crop_hint(analyzer) if "no face found" in str(exc) else ""
        print(f"facefuse: {exc.args[0] if exc.args else exc}{hint}", file=sys.stderr)
        return 2
    for note in gallery.notes:
        hint = crop_hint(analyzer) if "no face found" in note else ""
        print(f"facefuse: gallery: {note}{hint}", file=sys.stderr)
    threshold = args.threshold if args.threshold is not None \
        else analyzer.verification_threshold
    top = min(args.top, len(gallery.names))
    failures = faces = 0
    args.written = written = Written("standard output", "answer")
    results = analyzer.iter_analyze(queries, batch_images=args.batch_images)
    for result in tqdm(results, total=len(queries), unit="img", file=sys.stderr,
                       desc="queries", disable=args.quiet or len(queries) < 2):
        query = result.source
        if result.error:
            failures += 1
            print(f"facefuse: {result.error}", file=sys.stderr)
        if result.error or not result.faces:
            print(json.dumps({"query": query, "match": None,
                              "note": result.error or f"no face found{crop_hint(analyzer)}"}))
            written.add()
            continue
        faces += len(result.faces)
        for face in result.faces:
            ranked = gallery.rank(face.predictions["embedding"], top)
            best = ranked[0]
            answer = {"query": query, "face": face.index,
                      "match": best.name if best.similarity > threshold else None,
                      "nearest": best.name, "similarity": round(best.similarity, 4),
                      "threshold": round(threshold, 4)}
            if top > 1:
                answer["top"] = [{"name": m.name, "similarity": round(m.similarity, 4)}
                                 for m in ranked]
            print(json.dumps(answer))
            written.add()
    if not args.quiet:
        print(f"{len(queries)} query image(s), {faces} face(s), {failures} failed; gallery of "
              f"{len(gallery.names)} people", file=sys.stderr)
    return 1 if failures else 0  # as analyze: the other queries answered, failures reported


def _batch_and_quiet(p: argparse.ArgumentParser,
                     quiet_help: str = "no progress bar or summary") -> None:
    """``--batch-images`` and ``--quiet``, the options of a command that reads many photos."""
    p.add_argument("--batch-images", type=positive_int, default=32,
                   help="images decoded and predicted together (bounds the memory used)")
    p.add_argument("--quiet", action="store_true", help=quiet_help)


def add_analyze_parsers(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("analyze", help="detect faces and predict every task (images, "
                                       "folders, globs, videos)",
        **examples("facefuse analyze                 # the embedded demo photo",
                   "facefuse analyze photos/ clip.mp4 --out faces.jsonl --annotate out/",
                   "facefuse analyze 'photos/*.jpg' --format csv --out f.csv --tasks age,gender"))
    a.add_argument("paths", nargs="*", help="default: the embedded demo photo")
    a.add_argument("--format", choices=("jsonl", "csv"), default="jsonl",
                   help="jsonl (default): a JSON line per photo and per video frame face; "
                        "csv: a row per face under one header")
    a.add_argument("--out", default=None, help="output file (default: standard output)")
    a.add_argument("--annotate", default=None, help="folder for annotated images")
    a.add_argument("--align", action="store_true", help="align faces by their landmarks")
    a.add_argument("--tta-margins", type=float, nargs="+", default=None, metavar="M",
                   help="also crop each face with these margins (besides --margin) "
                        "and average every prediction but the landmarks over the crops: "
                        "a model pass more per margin; e.g. 0.15 0.25 (docs/MODEL_CARD.md)")
    a.add_argument("--landmark-refiner", default="shipped", metavar="shipped|none|PATH",
                   help="refine the model's 68 points on the photo with this cascade "
                        "(default: the shipped one; none: the model's points as they are; "
                        "fit one with `facefuse fit-landmarks`)")
    add_frame_sampling(a)
    _batch_and_quiet(a)
    add_analyzer_options(a, tasks=True)
    a.set_defaults(func=cmd_analyze)
    v = sub.add_parser("verify", help="are two photos the same person?",
        **examples("facefuse verify a.jpg b.jpg"))
    v.add_argument("a", help="a photo (its largest face is compared)")
    v.add_argument("b", help="the other photo")
    v.add_argument("--threshold", type=float, default=None,
                   help="cosine threshold (default: the identity embedding's own, fitted on "
                        "training identities)")
    add_analyzer_options(v)
    v.set_defaults(func=cmd_verify)
    e = sub.add_parser("embed", help="identity embeddings of every face (JSON lines)",
        **examples("facefuse embed photos/ > embeddings.jsonl"))
    e.add_argument("paths", nargs="+", help="photos, folders (recursive) or globs")
    _batch_and_quiet(e)
    add_analyzer_options(e)
    e.set_defaults(func=cmd_embed)
    s = sub.add_parser("search", help="nearest identity in a gallery folder",
        **examples("facefuse search query.jpg --gallery people/      # people/<name>/*.jpg",
                   "facefuse search queries/ --gallery people/ --top 3"))
    s.add_argument("queries", nargs="+", help="photos, folders or globs")
    s.add_argument("--gallery", required=True, help="folder: <identity>/ images or "
                                                    "<identity>.jpg files")
    s.add_argument("--threshold", type=float, default=None,
                   help="cosine threshold for a match (default: the identity embedding's own)")
    s.add_argument("--top", type=positive_int, default=1,
                   help="also list the K nearest people per face, with their similarity")
    _batch_and_quiet(s, quiet_help="no progress bars or summary")
    add_analyzer_options(s)
    s.set_defaults(func=cmd_search)
