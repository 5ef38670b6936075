"""Gallery index speed and recall: exact ``IndexIDMap2(IndexFlatIP)`` (what
:class:`facefuse.gallery.FaceGallery` uses) against IVF-Flat (``index_factory``, ``nprobe``
swept), on random unit vectors; and the store itself (SQLite + the exact index) at the same
size.

Usage:
    python benchmarks/bench_gallery.py                           # 10^5 vectors, 512-d
    python benchmarks/bench_gallery.py --sizes 100000 1000000    # 10^6 needs ~8 GB, minutes
    python benchmarks/bench_gallery.py --no-store --nprobes 16 64
    python benchmarks/bench_gallery.py --real /tmp/lfw_embeddings.npz --sizes 100000 1000000

``--real CACHE``: instead of random vectors, faces of identities modelled on real ones. The
shipped analyzer embeds up to ``--real-photos`` LFW photos (people with two photos or more,
four photos each at most; read in place from ../shared/data) into CACHE on the first run
(reused after). Each real person gives a centre (their embeddings' mean, unit length) and
each photo a residual (its embedding less its person's centre). A gallery of n faces is then
n / 4 identities of 4 faces: the identities' centres drawn from a Gaussian fitted to the real
centres (their mean and covariance), each face its centre plus a real residual drawn at
random, scaled to unit length; a probe is an enrolled identity's centre plus a residual that
none of its faces used (a new photo of the person). Besides recall@1 against the exact
index, ``identity first`` is the share of probes whose best face is their own identity's.

Per index: build (IVF: k-means training plus adding), a query in a batch of ``--queries``
(wall time / queries), a single query (default threads and one thread), removing 1,000 ids
in one call and one id alone, writing and reloading the file, and for IVF recall@1 against
the exact index. Two kinds of query: *probes*, a stored vector plus noise to cosine about
0.7 with it (a second photo of an enrolled face; its exact nearest is that vector), and
*random* unit vectors (no structure at all: IVF's worst case). Per store: ``add_many`` of
every vector (10,000 a transaction, the index saved once), the first search after opening
(the index file read and checked against SQLite), a rebuild from SQLite, one ``add`` that
saves the index (what a service enrolment costs), and a batch search of subjects.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facefuse.gallery.index import TRAIN_PER_LIST, ivf_lists
from facefuse.runtime.decoding import unit_rows


def timed(fn, repeat: int = 1) -> float:
    """Median wall seconds of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def data(n: int, dim: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray,
                                                             np.ndarray, np.ndarray]:
    """(vectors, probe queries, the vector each probe came from, random queries)."""
    rng = np.random.default_rng(seed)
    x = unit_rows(rng.standard_normal((n, dim), dtype=np.float32))
    source = rng.choice(n, queries, replace=False)
    noise = rng.standard_normal((queries, dim), dtype=np.float32) / np.sqrt(dim)
    probes = unit_rows(x[source] + noise)  # cosine ~ 1/sqrt(2) with its source
    return x, probes, source, unit_rows(rng.standard_normal((queries, dim), dtype=np.float32))


LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw" / "lfw"
FACES_PER_IDENTITY = 4


def real_embeddings(cache: Path, photos: int) -> tuple[np.ndarray, np.ndarray]:
    """(unit embeddings, person index) of up to ``photos`` LFW photos, from ``cache`` or
    made by the shipped analyzer and saved there."""
    if cache.is_file():
        with np.load(cache) as f:
            return f["embeddings"], f["person"]
    from facefuse.inference.analyzer import FaceAnalyzer

    people = sorted(p for p in LFW.iterdir() if len(list(p.glob("*.jpg"))) >= 2)
    paths, person = [], []
    for k, folder in enumerate(people):
        files = sorted(folder.glob("*.jpg"))[:FACES_PER_IDENTITY]
        paths += files
        person += [k] * len(files)
        if len(paths) >= photos:
            break
    analyzer = FaceAnalyzer(tasks=["embedding"])
    rows, kept = [], []
    for i, result in enumerate(analyzer.iter_analyze(paths)):
        face = result.largest_face()
        if face is not None:
            rows.append(face.predictions["embedding"])
            kept.append(person[i])
        if i % 500 == 499:
            print(f"embedded {i + 1} of {len(paths)} photos", file=sys.stderr, flush=True)
    embeddings, person = unit_rows(np.asarray(rows, np.float32)), np.asarray(kept)
    np.savez(cache, embeddings=embeddings, person=person)
    return embeddings, person


def real_like(n: int, queries: int, seed: int, embeddings: np.ndarray, person: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(faces, probes, each probe's identity; each face's identity is its row // 4): see
    the module's docstring."""
    rng = np.random.default_rng(seed)
    people = np.unique(person)
    centres = unit_rows(np.stack([embeddings[person == p].mean(0) for p in people]))
    residuals = embeddings - centres[np.searchsorted(people, person)]
    identities = n // FACES_PER_IDENTITY
    mean, cov = centres.mean(0), np.cov(centres, rowvar=False)
    drawn = unit_rows(rng.multivariate_normal(mean, cov, identities, method="eigh")
                      .astype(np.float32))
    picks = rng.integers(0, len(residuals), (identities, FACES_PER_IDENTITY + 1))
    while True:  # no residual twice for one identity (a probe is a new photo)
        repeated = (np.sort(picks, 1)[:, 1:] == np.sort(picks, 1)[:, :-1]).any(1)
        if not repeated.any():
            break
        picks[repeated] = rng.integers(0, len(residuals), (repeated.sum(), picks.shape[1]))
    faces = np.empty((n, embeddings.shape[1]), np.float32)
    step = 65536  # identities at a time: 10^6 faces at once would be several copies
    for start in range(0, identities, step):
        stop = min(identities, start + step)
        block = drawn[start:stop, None, :] + residuals[picks[start:stop, :FACES_PER_IDENTITY]]
        faces[start * FACES_PER_IDENTITY:stop * FACES_PER_IDENTITY] = \
            unit_rows(block.reshape(-1, embeddings.shape[1]))
    who = rng.choice(identities, queries, replace=False)
    probes = unit_rows(drawn[who] + residuals[picks[who, FACES_PER_IDENTITY]])
    return faces, probes, who


def measure_index(faiss, index, x: np.ndarray, probes: np.ndarray, build_s: float,
                  folder: Path) -> dict:
    """Query, remove, save and reload figures of a built index holding ids 0..n-1."""
    row: dict = {"build_s": build_s}
    row["batch_ms"] = 1e3 * timed(lambda: index.search(probes, 10)) / len(probes)
    singles = probes[:100]
    row["single_ms"] = 1e3 * timed(lambda: [index.search(q[None], 10) for q in singles]) / 100
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    row["single_1t_ms"] = 1e3 * timed(lambda: [index.search(q[None], 10) for q in singles]) \
        / 100
    faiss.omp_set_num_threads(threads)
    path = folder / "index.faiss"
    row["save_s"] = timed(lambda: faiss.write_index(index, str(path)))
    row["file_mb"] = path.stat().st_size / 1e6
    row["reload_s"] = timed(lambda: faiss.read_index(str(path)))
    doomed = np.random.default_rng(1).choice(len(x), 1010, replace=False).astype(np.int64)
    row["remove_1000_s"] = timed(lambda: index.remove_ids(doomed[:1000]))
    row["remove_1_ms"] = 1e3 * statistics.median(
        timed(lambda i=i: index.remove_ids(doomed[i:i + 1])) for i in range(1000, 1010))
    return row


def bench_indexes(faiss, x: np.ndarray, probes: np.ndarray, source: np.ndarray,
                  randoms: np.ndarray, nprobes: list[int], folder: Path, per: int = 1,
                  lists: int | None = None) -> list[dict]:
    """Exact and IVF at each nprobe; a probe's own face (identity) is ``source``, the
    faces ``per * source`` to ``per * source + per - 1``."""
    n, dim = x.shape
    ids = np.arange(n, dtype=np.int64)
    rows = []
    exact = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    build = timed(lambda: exact.add_with_ids(x, ids))
    _, truth_p = exact.search(probes, 1)
    _, truth_r = exact.search(randoms, 1)
    found = float(np.mean(truth_p[:, 0] // per == source))
    rows.append({"index": "IDMap2,Flat (exact)", **measure_index(faiss, exact, x, probes,
                                                                 build, folder),
                 "recall_probes": 1.0, "recall_random": 1.0, "probe_source_first": found})
    exact.reset()  # its memory back before the IVF index is built
    nlist = lists or ivf_lists(n)  # the gallery's own choice unless told
    ivf = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    train = x[np.random.default_rng(2).choice(n, min(n, TRAIN_PER_LIST * nlist),
                                              replace=False)]
    build = timed(lambda: ivf.train(train)) + timed(lambda: ivf.add_with_ids(x, ids))
    for nprobe in nprobes:
        faiss.extract_index_ivf(ivf).nprobe = nprobe
        _, got_p = ivf.search(probes, 1)
        _, got_r = ivf.search(randoms, 1)
        rows.append({"index": f"IVF{nlist},Flat nprobe {nprobe}",
                     "recall_probes": float(np.mean(got_p[:, 0] == truth_p[:, 0])),
                     "recall_random": float(np.mean(got_r[:, 0] == truth_r[:, 0])),
                     "probe_source_first": float(np.mean(got_p[:, 0] // per == source)),
                     "build_s": build,
                     "batch_ms": 1e3 * timed(lambda: ivf.search(probes, 10)) / len(probes),
                     "single_ms": 1e3 * timed(lambda: [ivf.search(q[None], 10)
                                                       for q in probes[:100]]) / 100})
    faiss.extract_index_ivf(ivf).nprobe = nprobes[-1]
    rows[-1].update({k: v for k, v in measure_index(faiss, ivf, x, probes, build,
                                                    folder).items() if k not in rows[-1]})
    return rows


def bench_store(x: np.ndarray, probes: np.ndarray, folder: Path) -> dict:
    """The persistent gallery at this size: one subject per 4 vectors."""
    from facefuse.gallery import FaceGallery

    n, dim = x.shape
    names = [f"subject_{i // 4}" for i in range(n)]
    row: dict = {}
    g = FaceGallery.create(folder / "store", dim, "bench", 0.5, autosave=False)

    def fill() -> None:
        for s in range(0, n, 10000):
            g.add_many(names[s:s + 10000], x[s:s + 10000])
        g.save_index()

    row["add_many_s"] = timed(fill)
    g.close()
    start = time.perf_counter()
    g = FaceGallery.open(folder / "store", autosave=True)
    g.search(probes[0], 5)  # the index is read and checked against SQLite on first use
    row["open_first_search_s"] = time.perf_counter() - start
    row["rebuild_s"] = timed(g.rebuild_index)
    row["add_one_saved_s"] = timed(lambda: g.add("new", probes[0]), repeat=3)
    row["search_batch_ms"] = 1e3 * timed(lambda: g.search(probes, 5)) / len(probes)
    row["search_single_ms"] = 1e3 * timed(lambda: [g.search(q, 5) for q in probes[:100]]) / 100
    g.close()
    row["sqlite_mb"] = (folder / "store" / "gallery.sqlite").stat().st_size / 1e6
    return row


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(c[1] for c in columns) + " |"
    lines = [head, "|" + "---|" * len(columns)]
    for r in rows:
        cells = [format(r[k], fmt) if k in r else "" for k, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


INDEX_COLUMNS = [("index", "index", ""), ("build_s", "build s", ".2f"),
                 ("batch_ms", "query ms (batch)", ".2f"),
                 ("single_ms", "query ms (single)", ".2f"),
                 ("single_1t_ms", "single, 1 thread", ".2f"),
                 ("remove_1000_s", "remove 1000 s", ".3f"), ("remove_1_ms", "remove 1 ms", ".1f"),
                 ("save_s", "save s", ".2f"), ("reload_s", "reload s", ".2f"),
                 ("file_mb", "file MB", ".0f"), ("recall_probes", "recall@1 probes", ".3f"),
                 ("recall_random", "recall@1 random", ".3f"),
                 ("probe_source_first", "probe's own first", ".3f")]
STORE_COLUMNS = [("n", "faces", ","), ("add_many_s", "add_many s", ".1f"),
                 ("open_first_search_s", "open + first search s", ".2f"),
                 ("rebuild_s", "rebuild s", ".2f"), ("add_one_saved_s", "add 1 (saved) s", ".2f"),
                 ("search_batch_ms", "search ms (batch)", ".2f"),
                 ("search_single_ms", "search ms (single)", ".2f"),
                 ("sqlite_mb", "SQLite MB", ".0f")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--nprobes", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    p.add_argument("--no-store", action="store_true", help="skip the FaceGallery figures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lists", type=int, default=None,
                   help="IVF lists (default: as the gallery chooses, about sqrt(n))")
    p.add_argument("--real", type=Path, default=None, metavar="CACHE.npz",
                   help="identities modelled on real LFW embeddings (see above), cached here")
    p.add_argument("--real-photos", type=int, default=3000,
                   help="LFW photos embedded for --real (default 3000)")
    args = p.parse_args()
    import faiss

    real = real_embeddings(args.real, args.real_photos) if args.real else None
    if real is not None:
        args.dim = real[0].shape[1]
        print(f"# real: {len(real[0])} LFW embeddings of {len(np.unique(real[1]))} people",
              file=sys.stderr)

    print(f"# {platform.machine()}, {os.cpu_count()} CPU(s), faiss {faiss.__version__} "
          f"({faiss.omp_get_max_threads()} threads), Python {platform.python_version()}, "
          f"{args.dim}-d {'real-like' if real else 'random unit'} vectors, {args.queries} "
          f"queries", file=sys.stderr)
    for n in args.sizes:
        x, probes, source, randoms = data(n, args.dim, args.queries, args.seed)
        per = 1
        if real is not None:
            del x, probes, source
            x, probes, source = real_like(n, args.queries, args.seed, *real)
            per = FACES_PER_IDENTITY
        with tempfile.TemporaryDirectory() as tmp:
            rows = bench_indexes(faiss, x, probes, source, randoms, sorted(args.nprobes),
                                 Path(tmp), per, args.lists)
            print(f"\n{n:,} vectors (exact top-1 of a probe is its source's: "
                  f"{rows[0]['probe_source_first']:.3f})\n")
            print(table(rows, INDEX_COLUMNS))
            if not args.no_store:
                print(f"\nFaceGallery, {n:,} faces\n")
                print(table([{"n": n, **bench_store(x, probes, Path(tmp))}], STORE_COLUMNS))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
