"""``facefuse batch INPUT... --out DIR``: batch analysis into Parquet on a local process
pool or on Ray (:mod:`facefuse.batch`; the batch extra, and the ray extra for Ray)."""

from __future__ import annotations

import argparse
import sys

from facefuse.cli.options import add_analyzer_options, examples
from facefuse.cli.values import SETUP_ERRORS, positive_float, positive_int, report
from facefuse.cli.video import add_frame_sampling


def settings_from(args: argparse.Namespace):
    """The :class:`~facefuse.batch.work.BatchSettings` the options describe."""
    from facefuse.batch.work import BatchSettings

    return BatchSettings(
        tasks=tuple(args.tasks) if args.tasks else None, embed_only=args.embed_only,
        features=args.features, model=args.model, detector=args.detector,
        device=args.device, min_face=args.min_face, margin=args.margin,
        flip=not args.no_flip, backend=args.backend,
        identity=None if args.identity == "none" else args.identity,
        identity_heads=None if args.identity_heads == "none" else args.identity_heads,
        landmark_refiner=None if args.landmark_refiner == "none" else args.landmark_refiner,
        batch_images=args.batch_images, fps=None if args.stride else args.fps,
        stride=args.stride, max_faces=args.max_faces, threads=args.threads)


def cmd_batch(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from facefuse.batch.job import run_batch
    from facefuse.batch.ledger import BatchConflict
    from facefuse.batch.local import WorkerDied

    if args.embed_only and args.tasks:
        report(ValueError("--embed-only reports the embedding alone; leave out --tasks"))
        return 2
    ray_options = None
    if args.engine == "ray":
        from facefuse.batch.ray_engine import RayOptions

        ray_options = RayOptions(address=args.address, workers=args.workers or 2,
                                 batch_size=args.batch_size,
                                 cpus_per_worker=args.cpus_per_worker,
                                 gpus_per_worker=args.gpus_per_worker,
                                 round_units=args.round_units)
    elif args.address:
        report(ValueError("--address is for --engine ray"))
        return 2
    bar = tqdm(unit="unit", file=sys.stderr, disable=args.quiet)

    def plan(todo: int, skipped: int) -> None:
        bar.total = todo
        if not args.quiet and skipped:
            print(f"facefuse: {skipped} unit(s) already done in {args.out}; skipped",
                  file=sys.stderr)

    try:
        result = run_batch(args.inputs, args.out, settings_from(args), args.engine,
                           workers=args.workers or 1, chunk_size=args.batch_size,
                           ray_options=ray_options, frames_per_unit=args.frames_per_unit,
                           progress=bar.update, on_plan=plan, quiet=args.quiet)
    except (*SETUP_ERRORS, BatchConflict) as exc:
        bar.close()
        report(exc)
        return 2
    except ConnectionError as exc:  # ray.init cannot reach --address
        bar.close()
        print(f"facefuse: {exc} (is the cluster up, is facefuse installed on its nodes, "
              f"and for Ray's token authentication RAY_AUTH_MODE=token with its token? "
              f"docs/BATCH.md)", file=sys.stderr)
        return 2
    except WorkerDied as exc:
        bar.close()
        report(exc)
        return 1
    bar.close()
    if not args.quiet:
        print(result.line(), file=sys.stderr)
    return 1 if result.totals.get("errors") else 0


def add_batch_parser(sub: argparse._SubParsersAction) -> None:
    """``facefuse batch``: needs the batch extra (pyarrow), and the ray extra for Ray."""
    b = sub.add_parser("batch", help="analyze many photos and videos into Parquet, on a "
                                     "process pool or on Ray; reruns skip what is done "
                                     "(needs facefuse[batch] or facefuse[ray])",
        **examples("facefuse batch photos/ --out out/",
                   "facefuse batch photos/ clips/ --out out/ --engine ray --workers 2",
                   "facefuse batch manifest.csv --out emb/ --embed-only   # a 'path' column",
                   "facefuse batch photos/ --out out/ --engine ray --address auto"))
    b.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="photos, videos, folders (recursive), globs, or CSV/Parquet "
                        "manifests with a 'path' column")
    b.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: faces/ and files/ Parquet, manifest.json "
                        "(docs/BATCH.md); a rerun into it skips the inputs done")
    b.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default): processes on this machine; ray: Ray Data actors "
                        "on this machine or a cluster")
    b.add_argument("--workers", type=positive_int, default=None,
                   help="worker processes or actors, each with its own analyzer (default: "
                        "1 locally, 2 on Ray)")
    b.add_argument("--batch-size", type=positive_int, default=16,
                   help="units per task handed to a worker (default 16)")
    b.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                   help="Ray cluster to join (default: start Ray in this process)")
    b.add_argument("--cpus-per-worker", type=positive_float, default=1.0,
                   help="CPUs each Ray actor declares (default 1)")
    b.add_argument("--gpus-per-worker", type=float, default=0.0,
                   help="GPUs each Ray actor declares (default 0; use with --device cuda)")
    b.add_argument("--round-units", type=positive_int, default=2000,
                   help="units per Ray round, each committed on its own (default 2000)")
    b.add_argument("--threads", type=positive_int, default=None,
                   help="ONNX Runtime and OpenCV threads per worker (default: cores / "
                        "workers locally, --cpus-per-worker on Ray)")
    b.add_argument("--embed-only", action="store_true",
                   help="only each face's identity embedding (for `facefuse gallery add "
                        "--from-parquet`)")
    b.add_argument("--features", action="store_true",
                   help="also write each face's trunk feature vector (for the cross-task "
                        "studies)")
    b.add_argument("--landmark-refiner", default="shipped", metavar="shipped|none|PATH",
                   help="refine the 68 points with this cascade (default: the shipped one)")
    add_frame_sampling(b)
    b.add_argument("--frames-per-unit", type=positive_int, default=900, metavar="N",
                   help="a video is split into work units of N frames (default 900)")
    b.add_argument("--max-faces", type=positive_int, default=8,
                   help="most confident faces kept per video frame (default 8)")
    b.add_argument("--batch-images", type=positive_int, default=32,
                   help="photos or frames decoded and predicted together (default 32)")
    b.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_analyzer_options(b, tasks=True)
    b.set_defaults(func=cmd_batch, needs_batch=True)
