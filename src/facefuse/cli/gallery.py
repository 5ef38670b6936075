"""``facefuse gallery create|add|remove|list|search|reembed``: a persistent face gallery in a
folder (:mod:`facefuse.gallery`) on the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from facefuse.cli.options import add_analyzer_options, build_analyzer, examples
from facefuse.cli.outputs import Written
from facefuse.cli.values import SETUP_ERRORS, face_choice, positive_int, report

if TYPE_CHECKING:  # the gallery modules load with the command that uses them
    from facefuse.gallery import FaceGallery
    from facefuse.gallery.enrol import Candidate


def cmd_create(args: argparse.Namespace) -> int:
    from facefuse.gallery import FaceGallery
    from facefuse.gallery.embedding_space import embedding_space

    try:
        space = embedding_space(build_analyzer(args, ["embedding"], None), args.model)
        threshold = space.threshold if args.threshold is None else args.threshold
        with FaceGallery.create(args.gallery, space.dim, space.fingerprint, threshold,
                                keep_images=args.keep_images) as g:
            print(json.dumps({"gallery": str(args.gallery), **g.info().to_dict()}))
    except SETUP_ERRORS as exc:
        report(exc)
        return 2
    return 0


def _photos(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(subject, photo) pairs to enrol: SUBJECT PHOTO... or a folder of people."""
    from facefuse.gallery.records import check_name
    from facefuse.inference.gallery import people_photos

    if args.from_folder:
        if args.items:
            raise ValueError("give SUBJECT PHOTO... or --from-folder PEOPLE, not both")
        people = people_photos(args.from_folder, "people folder")
        return [(check_name(name), p) for name, files in people.items() for p in files]
    if len(args.items) < 2:
        raise ValueError("give SUBJECT and one or more photos (or --from-folder PEOPLE)")
    subject = check_name(args.items[0])
    return [(subject, p) for p in _photo_inputs(args.items[1:], "add")]


def _photo_inputs(inputs: list[str], command: str) -> list[Path]:
    """The photos among ``inputs`` (files, folders, globs), none of them a video."""
    from facefuse.inference.analyzer import VIDEO_SUFFIXES, expand_inputs

    photos = [p for p in expand_inputs(inputs) if p.suffix.lower() not in VIDEO_SUFFIXES]
    if not photos:
        raise ValueError(f"no photo among the inputs (gallery {command} takes photos)")
    return photos


def cmd_add(args: argparse.Namespace) -> int:
    if args.from_parquet:
        return _add_from_parquet(args)
    from tqdm.auto import tqdm

    from facefuse.cli.analyze import crop_hint
    from facefuse.gallery import FaceGallery
    from facefuse.gallery.embedding_space import embedding_fingerprint
    from facefuse.gallery.enrol import candidates

    try:
        pairs = _photos(args)
        analyzer = build_analyzer(args, ["embedding"], None)
        gallery = FaceGallery.open(args.gallery, embedding_fingerprint(analyzer, args.model))
    except SETUP_ERRORS as exc:
        report(exc)
        return 2
    args.written = written = Written(str(args.gallery), "face")
    failures = 0
    with gallery, tqdm(total=len(pairs), unit="img", file=sys.stderr,
                       disable=args.quiet or len(pairs) < 2) as bar:
        chosen = []
        for i, c in enumerate(candidates(analyzer, pairs, args.face, args.batch_images)):
            bar.update(1)
            if c.face is None:
                failures += 1
                hint = crop_hint(analyzer) if "no face found" in (c.note or "") else ""
                print(f"facefuse: {c.note}{hint}; not added", file=sys.stderr)
            else:
                chosen.append(c)
            if chosen and (len(chosen) == args.batch_images or i == len(pairs) - 1):
                _enrol(gallery, chosen, written)
                chosen = []
        info = gallery.info()
    if not args.quiet:
        print(f"{len(pairs)} photo(s), {written.count} face(s) added, {failures} not; "
              f"{args.gallery} holds {info.faces} face(s) of {info.subjects} subject(s)",
              file=sys.stderr)
    return 1 if failures else 0


def _add_from_parquet(args: argparse.Namespace) -> int:
    """``gallery add DIR --from-parquet OUT``: the embeddings a batch job wrote, no
    analyzer run (:mod:`facefuse.gallery.bulk`)."""
    from facefuse.extras import require_batch_extra
    from facefuse.gallery import FaceGallery
    from facefuse.gallery.bulk import read_batch_faces

    try:
        if args.items or args.from_folder:
            raise ValueError("give --from-parquet OUT alone (no SUBJECT PHOTO..., no "
                             "--from-folder)")
        require_batch_extra("facefuse gallery add --from-parquet")
        bulk = read_batch_faces(args.from_parquet, args.face, args.subject_column)
        gallery = FaceGallery.open(args.gallery, bulk.fingerprint)
    except SETUP_ERRORS as exc:
        report(exc)
        return 2
    for note in bulk.notes:
        print(f"facefuse: {note}; not added", file=sys.stderr)
    args.written = written = Written(str(args.gallery), "face")
    with gallery:
        for start in range(0, len(bulk.sources), args.batch_images):
            end = start + args.batch_images
            ids = gallery.add_many(bulk.subjects[start:end], bulk.embeddings[start:end],
                                   bulk.sources[start:end], bulk.boxes[start:end])
            for i, face_id in enumerate(ids, start):
                print(json.dumps({"face_id": face_id, "subject": bulk.subjects[i],
                                  "source": bulk.sources[i], "face": bulk.faces[i],
                                  "box": [round(v, 1) for v in bulk.boxes[i]]}))
                written.add()
        info = gallery.info()
    if not args.quiet:
        print(f"{written.count} face(s) added from {args.from_parquet}, {len(bulk.notes)} "
              f"not; {args.gallery} holds {info.faces} face(s) of {info.subjects} "
              f"subject(s)", file=sys.stderr)
    return 1 if bulk.notes else 0


def _enrol(gallery: FaceGallery, chosen: list[Candidate], written: Written) -> None:
    """Add the chosen faces in one transaction and print a JSON line for each."""
    ids = gallery.add_many([c.subject for c in chosen],
                           [c.face.predictions["embedding"] for c in chosen],
                           [str(c.photo) for c in chosen], [c.face.box for c in chosen],
                           kept_photos(gallery, [c.photo for c in chosen]))
    for face_id, c in zip(ids, chosen, strict=True):
        print(json.dumps({"face_id": face_id, "subject": c.subject, "source": str(c.photo),
                          "face": c.face.index, "box": [round(v, 1) for v in c.face.box]}))
        written.add()


def kept_photos(gallery: FaceGallery, photos: list[Path]) -> list[bytes] | None:
    """The photos' bytes for a gallery that keeps them, else None."""
    return [p.read_bytes() for p in photos] if gallery.keeps_images else None


def cmd_reembed(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from facefuse.gallery import FaceGallery
    from facefuse.gallery.embedding_space import embedding_space
    from facefuse.gallery.reembed import reembed

    bars: list[tqdm] = []  # made on the first progress report: none before a refusal

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="face", file=sys.stderr, disable=args.quiet))
        bars[0].update(done - bars[0].n)

    try:
        analyzer = build_analyzer(args, ["embedding"], None)
        space = embedding_space(analyzer, args.model)
        with FaceGallery.open(args.gallery) as g:
            done = reembed(g, analyzer, space, args.threshold, args.batch_images, progress)
    except SETUP_ERRORS as exc:
        for bar in bars:
            bar.close()
        report(exc)
        return 2
    for bar in bars:
        bar.close()
    print(json.dumps({"gallery": str(args.gallery), **done.to_dict()}))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from facefuse.gallery import FaceGallery

    try:
        with FaceGallery.open(args.gallery) as g:
            for face_id in args.face or ():  # all checked before any is removed
                g.face(face_id)
            known = {s.name for s in g.subjects()}
            unknown = [s for s in args.subject or () if s not in known]
            if unknown:
                raise ValueError(f"no subject {unknown[0]!r} in the gallery")
            for face_id in dict.fromkeys(args.face or ()):
                g.remove_face(face_id)
                print(json.dumps({"removed": "face", "face_id": face_id}))
            for name in dict.fromkeys(args.subject or ()):
                print(json.dumps({"removed": "subject", "subject": name,
                                  "faces": g.remove_subject(name)}))
    except SETUP_ERRORS as exc:
        report(exc)
        return 2
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from facefuse.gallery import FaceGallery

    try:
        with FaceGallery.open(args.gallery, readonly=True) as g:
            info = g.info()
            rows = [f.to_dict() for f in g.faces(args.subject)] if args.subject or args.faces \
                else [s.to_dict() for s in g.subjects()]
    except SETUP_ERRORS as exc:
        report(exc)
        return 2
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{args.gallery}: {info.subjects} subject(s), {info.faces} face(s); {info.dim}-d "
          f"embeddings of {info.fingerprint}, threshold {info.threshold:.4f}, made "
          f"{info.created}{'; keeps its photos' if info.keeps_images else ''}")
    if rows and "id" in rows[0]:
        print(f"{'id':>8}  {'subject':<28} {'box':<26} source")
        for r in rows:
            box = "" if r["box"] is None else " ".join(f"{v:.0f}" for v in r["box"])
            print(f"{r['id']:>8}  {r['subject']:<28} {box:<26} {r['source'] or ''}")
    elif rows:
        print(f"{'subject':<32} {'faces':>6}  created")
        for r in rows:
            print(f"{r['name']:<32} {r['faces']:>6}  {r['created']}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from facefuse.cli.analyze import crop_hint
    from facefuse.gallery import FaceGallery
    from facefuse.gallery.embedding_space import embedding_fingerprint

    try:
        queries = _photo_inputs(args.queries, "search")
        analyzer = build_analyzer(args, ["embedding"], None)
        gallery = FaceGallery.open(args.gallery, embedding_fingerprint(analyzer, args.model),
                                   readonly=True)
    except SETUP_ERRORS as exc:
        report(exc)
        return 2
    args.written = written = Written("standard output", "answer")
    failures = 0
    with gallery:
        if gallery.info().faces == 0:
            print(f"facefuse: gallery {args.gallery} has no face to search (add some with "
                  f"`facefuse gallery add`)", file=sys.stderr)
            return 2
        results = analyzer.iter_analyze(queries, batch_images=args.batch_images)
        for result in tqdm(results, total=len(queries), unit="img", file=sys.stderr,
                           disable=args.quiet or len(queries) < 2):
            if result.error or not result.faces:
                failures += bool(result.error)
                note = result.error or f"no face found{crop_hint(analyzer)}"
                print(json.dumps({"query": result.source, "face": None, "match": None,
                                  "note": note}))
                written.add()
                continue
            found = gallery.search(np.stack([f.predictions["embedding"]
                                             for f in result.faces]), args.top)
            for face, hits in zip(result.faces, found, strict=True):
                best = hits[0]
                print(json.dumps({"query": result.source, "face": face.index,
                                  "box": [round(v, 1) for v in face.box],
                                  "match": best.subject if best.match else None,
                                  "top": [h.to_dict() for h in hits]}))
                written.add()
    if not args.quiet:
        print(f"{len(queries)} query image(s), {written.count} answer(s), {failures} failed",
              file=sys.stderr)
    return 1 if failures else 0


def _gallery_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("gallery", type=Path, metavar="DIR",
                   help="the gallery's folder (gallery.sqlite and index.faiss)")


def _batch_and_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-images", type=positive_int, default=32,
                   help="photos decoded and predicted together (and faces added in one "
                        "transaction)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def add_gallery_parser(sub: argparse._SubParsersAction) -> None:
    """``facefuse gallery ...``: every sub-command needs the gallery extra (faiss-cpu)."""
    g = sub.add_parser("gallery", help="a persistent face gallery in a folder: create, add, "
                                       "remove, list, search, reembed (needs "
                                       "facefuse[gallery])",
        **examples("facefuse gallery create people.gallery",
                   "facefuse gallery add people.gallery --from-folder people/",
                   "facefuse gallery search people.gallery query.jpg --top 3"))
    gsub = g.add_subparsers(dest="gallery_command", required=True)
    g.set_defaults(needs_gallery=True)
    c = gsub.add_parser("create", help="make an empty gallery for the analyzer's embeddings",
        **examples("facefuse gallery create people.gallery",
                   "facefuse gallery create people.gallery --threshold 0.85",
                   "facefuse gallery create own.gallery --identity none   # the model's head"))
    _gallery_argument(c)
    c.add_argument("--threshold", type=float, default=None,
                   help="cosine at or above which a search is a match (default: the "
                        "identity embedding's own, fitted on training identities)")
    c.add_argument("--keep-images", action="store_true",
                   help="keep each enrolled face's photo in the gallery, so that `gallery "
                        "reembed` can embed it again with other weights")
    add_analyzer_options(c)
    c.set_defaults(func=cmd_create)
    _add_add_parser(gsub)
    _add_remove_parser(gsub)
    ls = gsub.add_parser("list", help="the subjects (or faces) of a gallery",
        **examples("facefuse gallery list people.gallery",
                   "facefuse gallery list people.gallery --subject Ada --json"))
    _gallery_argument(ls)
    ls.add_argument("--subject", default=None, metavar="NAME", help="list this subject's faces")
    ls.add_argument("--faces", action="store_true", help="list every face, not the subjects")
    ls.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    ls.set_defaults(func=cmd_list)
    s = gsub.add_parser("search", help="the nearest subjects of every face of the photos "
                                       "(JSON line per face)",
        **examples("facefuse gallery search people.gallery query.jpg",
                   "facefuse gallery search people.gallery queries/ --top 3"))
    _gallery_argument(s)
    s.add_argument("queries", nargs="+", metavar="PHOTO", help="photos, folders or globs")
    s.add_argument("--top", type=positive_int, default=1,
                   help="the K best subjects per face, each with its score and match")
    _batch_and_quiet(s)
    add_analyzer_options(s)
    s.set_defaults(func=cmd_search)
    e = gsub.add_parser("reembed", help="embed every face again with the analyzer's weights "
                                        "(a gallery made with --keep-images)",
        **examples("facefuse gallery reembed people.gallery",
                   "facefuse gallery reembed people.gallery --identity none   # the model's head"))
    _gallery_argument(e)
    e.add_argument("--threshold", type=float, default=None,
                   help="the gallery's new match threshold (default: the new embeddings' own)")
    _batch_and_quiet(e)
    add_analyzer_options(e)
    e.set_defaults(func=cmd_reembed)


def _add_add_parser(gsub: argparse._SubParsersAction) -> None:
    """``facefuse gallery add``."""
    a = gsub.add_parser("add", help="enrol one face of each photo (JSON line per face added)",
        **examples("facefuse gallery add people.gallery Ada ada1.jpg ada2.jpg",
                   "facefuse gallery add people.gallery Ada group.jpg --face 2",
                   "facefuse gallery add people.gallery --from-folder people/  # <name>/*.jpg",
                   "facefuse gallery add people.gallery --from-parquet out/  # facefuse batch"))
    _gallery_argument(a)
    a.add_argument("items", nargs="*", metavar="SUBJECT PHOTO",
                   help="the subject's name, then photos, folders or globs")
    a.add_argument("--from-folder", default=None, metavar="PEOPLE",
                   help="enrol PEOPLE/<name>/* (or PEOPLE/<name>.jpg) under each name")
    a.add_argument("--from-parquet", default=None, metavar="OUT",
                   help="enrol the embeddings a `facefuse batch` run wrote to OUT (one face "
                        "per photo; subject: the photo's folder, or --subject-column)")
    a.add_argument("--subject-column", default=None, metavar="NAME",
                   help="with --from-parquet: the faces column that names the subject")
    a.add_argument("--face", type=face_choice, default="largest", metavar="largest|N",
                   help="which face of each photo: the largest (default) or number N, as "
                        "`facefuse analyze` numbers them")
    _batch_and_quiet(a)
    add_analyzer_options(a)
    a.set_defaults(func=cmd_add)


def _add_remove_parser(gsub: argparse._SubParsersAction) -> None:
    """``facefuse gallery remove``."""
    r = gsub.add_parser("remove", help="remove faces by id, or subjects with all their faces",
        **examples("facefuse gallery remove people.gallery --face 12 --face 13",
                   "facefuse gallery remove people.gallery --subject Ada"))
    _gallery_argument(r)
    what = r.add_mutually_exclusive_group(required=True)
    what.add_argument("--face", type=positive_int, action="append", metavar="ID",
                      help="a face id (`facefuse gallery list DIR --faces`); repeatable")
    what.add_argument("--subject", action="append", metavar="NAME",
                      help="a subject, with every face of theirs; repeatable")
    r.set_defaults(func=cmd_remove)
