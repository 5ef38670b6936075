"""The ``facefuse`` command: thin subcommands over the Python API.

Call :func:`main` with an argument list to run it in process (as the tests do).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from facefuse import __version__
from facefuse.cli.options import examples
from facefuse.cli.outputs import make_folder
from facefuse.cli.values import positive_int
from facefuse.extras import (
    missing_extra_message,
    require_batch_extra,
    require_gallery_extra,
    require_serve_extra,
    require_training_extra,
)

DEFAULT_DATA_ROOTS = (Path("../shared/data"), Path("shared/data"))


def default_data_root() -> Path | None:
    """``../shared/data`` (or ``shared/data``) relative to the working directory, if present."""
    return next((p for p in DEFAULT_DATA_ROOTS if p.is_dir()), None)


def _data_root(arg: str | None) -> Path:
    if arg is not None:
        return Path(arg)
    root = default_data_root()
    if root is None:
        raise SystemExit("facefuse: no data root given and neither ../shared/data nor "
                         "shared/data exists here; pass ROOT")
    return root


def cmd_data_summary(args: argparse.Namespace) -> int:
    from facefuse.data.readers import DatasetError, SplitConfig
    from facefuse.data.summary import format_summary, summarize_root

    root = _data_root(args.root)
    try:
        summaries = summarize_root(root, SplitConfig(seed=args.seed))
    except DatasetError as exc:
        print(f"facefuse: {exc}", file=sys.stderr)
        return 2
    if not summaries:
        print(f"facefuse: no known dataset layout under {root}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([s.to_dict() for s in summaries], indent=1))
    else:
        print(format_summary(summaries, max_skipped=args.max_skipped))
    return 1 if any(s.error for s in summaries) else 0


def cmd_data_cache(args: argparse.Namespace) -> int:
    from facefuse.data.cache import CacheSpec, build_cache
    from facefuse.data.readers import DatasetError, SplitConfig, read_dataset
    from facefuse.data.table import SampleTable

    root = _data_root(args.root)
    try:
        results = [read_dataset(name, root, SplitConfig(seed=args.seed))
                   for name in args.dataset]
        unknown = set(args.detector_crop or ()) - set(args.dataset)
        if unknown:
            raise ValueError(f"--detector-crop names datasets not cached: {sorted(unknown)}")
        spec = CacheSpec(size=args.size, crop=args.crop,
                         detector_crop=tuple(args.detector_crop or ()))
    except (DatasetError, KeyError, ValueError) as exc:
        print(f"facefuse: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    table = SampleTable.concat([r.table for r in results])
    cache = build_cache(table, args.out, spec, name="-".join(args.dataset),
                        workers=args.workers, progress=not args.quiet)
    skipped = sum(len(r.skipped) for r in results) + len(cache.meta["skipped"])
    print(f"{cache.path}: {cache.meta['valid']} of {len(cache)} images at {spec.size}px "
          f"({cache.meta['images_per_second']} img/s when built); {skipped} file(s) skipped")
    return 0


def cmd_data_caches(args: argparse.Namespace) -> int:
    from facefuse.data.cache_folders import (
        cache_folders,
        format_folders,
        format_size,
        remove_cache_folder,
    )

    try:
        folders = cache_folders(args.folder)
    except FileNotFoundError as exc:
        print(f"facefuse: {exc}", file=sys.stderr)
        return 2
    by_name = {f.name: f for f in folders}
    unknown = [n for n in args.remove or () if n not in by_name]
    if unknown:
        print(f"facefuse: not a cache under {args.folder}: {', '.join(unknown)} "
              f"(run 'facefuse data caches {args.folder}' to list them)", file=sys.stderr)
        return 2
    doomed = [by_name[n] for n in dict.fromkeys(args.remove or ())]
    if args.remove_unfinished:
        doomed += [f for f in folders if f.state == "interrupted" and f not in doomed]
    if not doomed:
        if args.json:
            print(json.dumps([f.to_dict() for f in folders], indent=1))
        else:
            print(format_folders(folders))
        return 0
    status = 0
    for folder in doomed:
        try:
            remove_cache_folder(folder)
        except (ValueError, OSError) as exc:
            print(f"facefuse: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"removed {folder.path} ({format_size(folder.size_bytes)})")
    return status


def cmd_experiment(args: argparse.Namespace) -> int:
    from facefuse.config import ConfigError, load_config
    from facefuse.experiments import EXPERIMENTS, experiment_kind

    profile = "quick" if args.quick else args.profile
    overrides = list(args.set or [])
    if args.output:
        overrides.append(f"output={args.output}")
    try:
        experiment = EXPERIMENTS.get(experiment_kind(args.config))
        cfg = load_config(experiment.config_class, args.config, overrides, profile)
    except (ConfigError, KeyError, ValueError, FileNotFoundError) as exc:
        print(f"facefuse: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    if not make_folder(cfg.output, f"the report to {cfg.output}"):
        return 2
    try:
        out = experiment.run(cfg, progress=not args.quiet)
    except ConfigError as exc:  # a config the experiment reads in turn (a base config)
        print(f"facefuse: {exc}", file=sys.stderr)
        return 2
    from facefuse.train.distributed import launched_as_main

    if not launched_as_main():  # under torchrun, rank 0 speaks for the run
        return 0
    print(f"report written to {out}")
    report = out / "report.md"
    if report.is_file() and not args.quiet:
        print(report.read_text())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from facefuse.config import ConfigError, load_config
    from facefuse.train.mtl import MTLConfig, RunConflict, train_mtl

    overrides = list(args.set or [])
    if args.output:
        overrides.append(f"output={args.output}")
    try:
        cfg = load_config(MTLConfig, args.config, overrides,
                          "quick" if args.quick else args.profile)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"facefuse: {exc}", file=sys.stderr)
        return 2
    if args.cache_only:  # build (or find) the training cache, e.g. to pack it for a GPU
        from facefuse.train.mtl import training_cache

        if cfg.cache is not None:
            print("facefuse: --cache-only builds a cache from data_root; this config names a "
                  "prebuilt one (cache=...)", file=sys.stderr)
            return 2
        cache, _ = training_cache(cfg, progress=not args.quiet)
        print(f"training cache: {cache.path} ({len(cache)} images at {cache.spec.size} px)")
        return 0
    if not make_folder(cfg.output, f"the run to {cfg.output}"):  # before the data is read
        return 2
    try:
        out = train_mtl(cfg, progress=not args.quiet)
    except RunConflict as exc:
        print(f"facefuse: {exc}", file=sys.stderr)
        return 2
    metrics = out / "metrics.json"
    if metrics.is_file() and not args.quiet:
        print(json.dumps(json.loads(metrics.read_text())["test"], indent=1))
    print(f"model written to {out / 'final.safetensors'}")
    return 0


def add_run_options(p: argparse.ArgumentParser, output_what: str) -> None:
    """Profile, overrides, output folder and quiet: shared by config-driven commands."""
    which = p.add_mutually_exclusive_group()  # one profile a run (they may extend others)
    which.add_argument("--quick", action="store_true",
                       help="apply the config's 'quick' profile (small, CPU-sized)")
    which.add_argument("--profile", default=None, help="apply another named profile")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set seeds=[0]")
    p.add_argument("--output", default=None, help=f"{output_what} (overrides 'output')")
    p.add_argument("--quiet", action="store_true", help="no progress bar or report echo")


#: what every command's exit status means (the root --help prints it)
EXIT_CODES = """exit status, for every command:
  0    done
  1    done, but some inputs failed (each reported as 'facefuse: ...' on stderr), or a
       worker died
  2    nothing done: a usage error, bad input or settings, or a missing extra
  130  interrupted (Ctrl-C); what was written so far is kept and reported
  141  the reader of standard output went away (e.g. '| head')

Errors are one line on stderr, prefixed 'facefuse: '."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facefuse", description=__doc__.splitlines()[0],
                                     epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"facefuse {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_data_parser(sub)
    _add_training_parsers(sub)
    from facefuse.cli.analyze import add_analyze_parsers
    from facefuse.cli.batch import add_batch_parser
    from facefuse.cli.gallery import add_gallery_parser
    from facefuse.cli.landmarks import add_landmarks_parser
    from facefuse.cli.model import add_export_onnx_alias, add_model_parser
    from facefuse.cli.serve import add_serve_parser
    from facefuse.cli.video import add_video_parser

    add_analyze_parsers(sub)
    add_landmarks_parser(sub)
    add_video_parser(sub)
    add_model_parser(sub)
    add_export_onnx_alias(sub)
    add_gallery_parser(sub)
    add_serve_parser(sub)
    add_batch_parser(sub)
    return parser


def _add_data_parser(sub: argparse._SubParsersAction) -> None:
    """``facefuse data summary | cache | caches``."""
    data = sub.add_parser("data", help="inspect datasets and build training caches")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    summary = data_sub.add_parser("summary", help="counts, label distributions and skipped "
                                                   "files of every dataset found under ROOT",
        **examples("facefuse data summary ../shared/data",
                   "facefuse data summary --json > summary.json"))
    summary.add_argument("root", nargs="?", help="data root (default: ../shared/data)")
    summary.add_argument("--json", action="store_true", help="machine-readable output")
    summary.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    summary.add_argument("--max-skipped", type=int, default=None,
                         help="list at most this many skipped files per dataset")
    summary.set_defaults(func=cmd_data_summary)

    cache = data_sub.add_parser("cache", help="decode, crop and resize datasets into a "
                                              "memory-mapped training cache",
        **examples("facefuse data cache --dataset utkface --dataset fer2013 --size 96"))
    cache.add_argument("root", nargs="?", help="data root (default: ../shared/data)")
    cache.add_argument("--dataset", action="append", required=True,
                       help="dataset reader name (repeat to mix datasets)")
    cache.add_argument("--size", type=positive_int, default=112,
                       help="side in pixels (default 112)")
    cache.add_argument("--crop", default="auto", help="auto (landmark/centre crops) or none")
    cache.add_argument("--detector-crop", action="append", metavar="DATASET",
                       help="crop this dataset's images as the analyzer does (MTCNN face, "
                            "calibrated box, training margin); repeatable")
    cache.add_argument("--out", default=".facefuse-cache", help="cache folder")
    cache.add_argument("--workers", type=positive_int, default=None, help="decoding processes")
    cache.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    cache.add_argument("--quiet", action="store_true", help="no progress bar")
    cache.set_defaults(func=cmd_data_cache)

    caches = data_sub.add_parser("caches", help="list the training caches in a folder (size, "
                                                 "contents, unfinished builds); remove some",
        **examples("facefuse data caches",
                   "facefuse data caches --remove-unfinished"))
    caches.add_argument("folder", nargs="?", default=".facefuse-cache",
                        help="cache folder (default .facefuse-cache)")
    caches.add_argument("--remove", action="append", metavar="NAME",
                        help="delete this cache (a name the listing shows); repeatable")
    caches.add_argument("--remove-unfinished", action="store_true",
                        help="delete the leftovers of interrupted builds")
    caches.add_argument("--json", action="store_true", help="machine-readable listing")
    caches.set_defaults(func=cmd_data_caches)


def _add_training_parsers(sub: argparse._SubParsersAction) -> None:
    """``facefuse experiment`` and ``facefuse train``."""
    exp = sub.add_parser("experiment", help="run an experiment protocol from a YAML config "
                                            "and write its report folder",
        **examples("facefuse experiment configs/li_zhu.yaml --quick",
                   "facefuse experiment configs/dmm_cnn.yaml --set 'seeds=[0]'"))
    exp.add_argument("config", help="YAML config (its 'kind' names the protocol)")
    add_run_options(exp, "report folder")
    exp.set_defaults(needs_training=True, func=cmd_experiment)

    train = sub.add_parser("train", help="train one multi-task model across datasets "
                                         "(runs unchanged under torchrun)",
        **examples("facefuse train configs/mtl.yaml --quick",
                   "torchrun --nproc_per_node 2 -m facefuse train configs/mtl.yaml"))
    train.add_argument("config", help="YAML config (see configs/mtl.yaml)")
    add_run_options(train, "run folder")
    train.add_argument("--cache-only", action="store_true",
                       help="only build the training cache and print its folder (to pack it "
                            "for another machine: tools/pack_for_device.py --cache FOLDER)")
    train.set_defaults(needs_training=True, func=cmd_train)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    level = [logging.ERROR, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("facefuse").setLevel(level)
    command = " ".join(["facefuse", args.command, *([getattr(args, f"{args.command}_command")]
                                                    if args.command in ("gallery", "model")
                                                    else [])])
    try:
        if getattr(args, "needs_training", False):
            require_training_extra(command)
        if getattr(args, "needs_gallery", False):
            require_gallery_extra(command)
        if getattr(args, "needs_serve", False):
            require_serve_extra(command)
        if getattr(args, "needs_batch", False):
            require_batch_extra(command, args.engine)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
        return code
    except BrokenPipeError:  # `facefuse analyze ... | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail
        return 141  # 128 + SIGPIPE, as a shell reports a command a pipe closed on
    except KeyboardInterrupt:  # Ctrl-C: what was written stays whole; say how much, and where
        written = getattr(args, "written", None)
        sys.stdout.flush()
        print(f"facefuse: interrupted{'; ' + written.line() if written else ''}",
              file=sys.stderr)
        return 130  # 128 + SIGINT
    except ImportError as exc:  # a module of an extra that is not installed: one line
        message = missing_extra_message(exc, command)
        if message is None:
            raise
        print(f"facefuse: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
