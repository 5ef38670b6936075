"""``facefuse video``: analyze videos (per-track results over time), fit and apply a
clip-level classifier on frame-embedding statistics."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from facefuse.cli.options import add_analyzer_options, examples
from facefuse.cli.outputs import Written, counted, make_folder, output_stems
from facefuse.cli.values import SETUP_ERRORS, positive_float, positive_int, report


def add_frame_sampling(p: argparse.ArgumentParser) -> None:
    """``--fps`` (default 5) or ``--stride``: which frames of a video are analyzed."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--fps", type=positive_float, default=5.0,
                       help="frames sampled per second of video (default 5)")
    group.add_argument("--stride", type=positive_int, default=None, metavar="N",
                       help="or every N-th frame (1: every frame)")


def frame_sampling(args: argparse.Namespace) -> dict:
    """The ``fps``/``stride`` arguments of :func:`analyze_video` from the options."""
    return {"fps": None, "stride": args.stride} if args.stride else {"fps": args.fps}


def _model_path(args: argparse.Namespace) -> str:
    from facefuse.weights import shipped_model_path

    return args.model or shipped_model_path()


#: what a video's faces are analyzed for by default: every task of the model but identity
#: (the clip feature is the model's trunk vector; no identity networks are needed)
VIDEO_TASKS_SKIPPED = ("identity",)


def _analyzer(args: argparse.Namespace):
    from facefuse.cli.options import build_analyzer

    analyzer = build_analyzer(args, landmark_refiner="shipped" if args.refine_landmarks
                              else None)
    if not getattr(args, "tasks", None):
        analyzer.tasks = [t for t in analyzer.tasks if t not in VIDEO_TASKS_SKIPPED]
    return analyzer


def feature_settings(args: argparse.Namespace, analyzer) -> dict:
    """How clip features are made with these options: the model's name and weights
    fingerprint, test-time flip, frame sampling, crop margin and detector."""
    from facefuse.runtime.model_files import model_base, weights_fingerprint

    model = _model_path(args)
    return {"model": model_base(model).name, "weights": weights_fingerprint(model),
            "flip": not args.no_flip, **frame_sampling(args), "margin": analyzer.margin,
            "detector": args.detector}


def setting_mismatches(fitted: dict, now: dict) -> tuple[list[str], list[str]]:
    """(fatal, warnings): the differences between a classifier's recorded feature settings
    and these; other weights are fatal (the features mean something else), the rest change
    the features' statistics and are warnings (sampling by stride instead of fps is one). A
    classifier that recorded no settings is not compared."""
    fatal: list[str] = []
    warn: list[str] = []
    if not fitted:  # a classifier saved before the settings were recorded
        return fatal, warn
    for key in sorted(set(fitted) | set(now) - {"model"}):
        if key == "model" or fitted.get(key) == now.get(key):
            continue
        line = f"{key}: fitted with {fitted.get(key)!r}, now {now.get(key)!r}"
        (fatal if key == "weights" else warn).append(line)
    if fatal:
        fatal[0] += f" (it was fitted on {fitted.get('model', '?')}'s features; pass --model)"
    return fatal, warn


def _clip_features(paths: list[str], args: argparse.Namespace, analyzer
                   ) -> tuple[list, list[str | None]]:
    """:func:`facefuse.inference.video.clip_features` with a progress bar."""
    from tqdm.auto import tqdm

    from facefuse.inference.video import clip_features

    with tqdm(total=len(paths), desc="clips", unit="clip", disable=args.quiet) as bar:
        return clip_features(paths, analyzer, **frame_sampling(args),
                             on_clip=lambda: bar.update(1))


def cmd_video_analyze(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from facefuse.inference.video import VideoError, analyze_video

    try:
        analyzer = _analyzer(args)
    except SETUP_ERRORS as exc:
        report(exc)
        return 2
    out = Path(args.out)
    if not make_folder(out, f"results to {out}"):
        return 2
    failures = 0
    args.written = written = Written(str(out), "frame face record")
    stems = output_stems(args.videos)  # a/clip.mp4 and b/clip.mp4: a__clip.mp4, b__clip.mp4
    for video in args.videos:
        stem = stems[video]
        bar = tqdm(desc=stem, unit="frame", disable=args.quiet)
        frames_file = out / f"{stem}.frames.jsonl"
        try:
            with frames_file.open("w") as records:
                result = analyze_video(video, analyzer, **frame_sampling(args),
                                       records=counted(records, written),
                                       on_frame=lambda _: bar.update(1))  # noqa: B023 (called now)
        except VideoError as exc:
            print(f"facefuse: {exc}", file=sys.stderr)
            frames_file.unlink()  # no results file for a video that could not be read
            failures += 1
            continue
        finally:
            bar.close()
        (out / f"{stem}.tracks.json").write_text(json.dumps(result.to_dict(), indent=1))
        with (out / f"{stem}.tracks.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["track", "frames", "start_s", "end_s", "labels"])
            for t in result.tracks:
                w.writerow([t["track"], t["frames"], t["start_s"], t["end_s"],
                            json.dumps(t["labels"])])
        print(f"{video}: {result.frames_sampled} frames sampled, {result.faces} faces, "
              f"{len(result.tracks)} tracks{'; ' + result.note if result.note else ''}")
    return 1 if failures else 0


def cmd_video_fit(args: argparse.Namespace) -> int:

    from facefuse.inference.clips import fit_on_manifest, read_clip_manifest

    try:
        rows = read_clip_manifest(args.manifest)
        analyzer = _analyzer(args)
    except SETUP_ERRORS as exc:
        report(exc)
        return 2
    if not make_folder(Path(args.out).parent, args.out):  # before the clips are analyzed
        return 2
    feats, notes = _clip_features([r["video"] for r in rows], args, analyzer)
    for n in notes:
        if n is not None:
            print(f"skipped: {n}", file=sys.stderr)
    try:
        fit = fit_on_manifest(feats, rows)
    except ValueError as exc:
        print(f"facefuse: {exc}", file=sys.stderr)
        return 1
    clf = fit.classifier
    clf.features = feature_settings(args, analyzer)
    try:
        clf.save(args.out)
    except OSError as exc:
        print(f"facefuse: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"clip classifier ({fit.train_clips} clips, classes {clf.classes}) written to "
          f"{args.out}")
    if fit.test_accuracy is not None:
        print(f"test clips: {fit.test_clips}, accuracy {100 * fit.test_accuracy:.1f} %")
    return 0


def cmd_video_predict(args: argparse.Namespace) -> int:
    from facefuse.inference.clips import ClipClassifier

    try:
        clf = ClipClassifier.load(args.classifier)
        analyzer = _analyzer(args)
    except SETUP_ERRORS as exc:
        report(exc)
        return 2
    fatal, warn = setting_mismatches(clf.features, feature_settings(args, analyzer))
    if fatal:
        print(f"facefuse: {args.classifier}: clip features made with other weights: "
              f"{'; '.join(fatal)}", file=sys.stderr)
        return 2
    if warn:
        print(f"facefuse: warning: {args.classifier} was fitted on clip features made "
              f"otherwise ({'; '.join(warn)}); its predictions may suffer", file=sys.stderr)
    feats, notes = _clip_features(args.videos, args, analyzer)
    for video, f, note in zip(args.videos, feats, notes, strict=True):
        if f is None:
            print(json.dumps({"video": video, "label": None, "note": note}))
            continue
        try:
            p = clf.predict_proba(f[None])[0]
        except ValueError as exc:  # every clip of this model would fail the same way
            print(f"facefuse: {args.classifier}: {exc}", file=sys.stderr)
            return 2
        print(json.dumps({"video": video, "label": clf.classes[int(p.argmax())],
                          "probabilities": dict(zip(clf.classes, p.round(4).tolist(),
                                                    strict=True))}))
    return 0


def add_video_parser(sub: argparse._SubParsersAction) -> None:
    video = sub.add_parser("video", help="analyze videos; clip-level classification")
    vsub = video.add_subparsers(dest="video_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        add_analyzer_options(p, tasks=True, identity_default="none")
        add_frame_sampling(p)
        p.add_argument("--refine-landmarks", action="store_true",
                       help="refine each face's 68 points with the shipped cascade (slower)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    a = vsub.add_parser("analyze", help="per-track results over time (JSON lines + CSV)",
        **examples("facefuse video analyze clip.mp4 --out results/",
                   "facefuse video analyze clips/*.mp4 --stride 1 --tasks emotion"))
    a.add_argument("videos", nargs="+", help="video files (MP4, AVI, MOV, MKV, WebM, M4V)")
    a.add_argument("--out", default="video_results", help="output folder")
    common(a)
    a.set_defaults(func=cmd_video_analyze)
    f = vsub.add_parser("fit", help="train a clip classifier from a manifest video,label[,split]",
        **examples("facefuse video fit clips.csv --out clf.json   # rows: video,label[,split]"))
    f.add_argument("manifest", help="CSV with a header: video,label[,split] (split 'test' "
                                    "rows are held out and scored)")
    f.add_argument("--out", default="clip_classifier.json",
                   help="where the classifier is written (JSON; default clip_classifier.json)")
    common(f)
    f.set_defaults(needs_training=True, func=cmd_video_fit)
    p = vsub.add_parser("predict", help="classify clips with a fitted clip classifier",
        **examples("facefuse video predict new/*.mp4 --classifier clf.json"))
    p.add_argument("videos", nargs="+", help="video files to classify")
    p.add_argument("--classifier", required=True, help="a classifier `video fit` wrote")
    common(p)
    p.set_defaults(func=cmd_video_predict)
