"""Write tiny fake datasets in each public layout (the tests' own data, no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from facefuse.tasks import CELEBA_ATTRIBUTES, EMOTIONS


def write_image(path: Path, size: tuple[int, int] = (32, 32), seed: int = 0,
                mode: str = "RGB") -> Path:
    """A small random-texture image (JPEG or PNG by suffix)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode).save(path)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_utkface(root: Path, n: int = 40) -> Path:
    folder = root / "utkface" / "UTKFace"
    for i in range(n):
        age, gender, race = 5 + (i * 7) % 80, i % 2, i % 5
        write_image(folder / f"{age}_{gender}_{race}_2017011{i:07d}.jpg.chip.jpg", seed=i)
    return folder


def write_fer2013(root: Path, per_class: int = 4) -> Path:
    folder = root / "fer2013"
    for split, count in (("train", per_class * 2), ("test", per_class)):
        for e in EMOTIONS:
            for i in range(count):
                write_image(folder / split / e / f"{split}_{e}_{i}.jpg", (48, 48), seed=i,
                            mode="L")
    return folder


def write_lfw(root: Path, people: int = 6, per_person: int = 3, extra_people: int = 2) -> Path:
    """People p0..p{people-1} appear in pairs.txt (2 folds); extra ones do not."""
    folder = root / "lfw"
    names = [f"Person_{chr(65 + i)}" for i in range(people + extra_people)]
    for k, name in enumerate(names):
        for j in range(1, per_person + 1):
            write_image(folder / "lfw" / name / f"{name}_{j:04d}.jpg", seed=k * 10 + j)
    lines = ["2\t2"]
    in_pairs = names[:people]
    half = len(in_pairs) // 2
    for fold_people in (in_pairs[:half], in_pairs[half:]):
        a, b = fold_people[0], fold_people[1]
        lines += [f"{a}\t1\t2", f"{b}\t1\t3", f"{a}\t1\t{b}\t2", f"{a}\t3\t{fold_people[-1]}\t1"]
    (folder / "pairs.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_celeba(root: Path, identities: int = 10, per_identity: int = 3,
                 partition: bool = True) -> Path:
    folder = root / "celeba"
    rows_id, rows_attr, rows_part = [], [], []
    k = 0
    rng = np.random.default_rng(0)
    for ident in range(identities):
        for _ in range(per_identity):
            k += 1
            name = f"{k:06d}.jpg"
            write_image(folder / "img_celeba" / name, (40, 40), seed=k)
            rows_id.append(f"{name} {100 + ident}")
            values = rng.choice(["1", "-1"], size=len(CELEBA_ATTRIBUTES))
            rows_attr.append(f"{name} " + " ".join(f"{v:>2}" for v in values))
            part = 0 if ident < identities - 2 else (1 if ident == identities - 2 else 2)
            rows_part.append(f"{name} {part}")
    (folder / "identity_CelebA.txt").write_text("\n".join(rows_id) + "\n")
    (folder / "list_attr_celeba.txt").write_text(
        f"{len(rows_attr)}\n{' '.join(CELEBA_ATTRIBUTES)}\n" + "\n".join(rows_attr) + "\n")
    if partition:
        (folder / "list_eval_partition.txt").write_text("\n".join(rows_part) + "\n")
    return folder


def pts_text(points: np.ndarray) -> str:
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    return f"version: 1\nn_points: {len(points)}\n{{\n{body}\n}}\n"


def face_points(center: tuple[float, float] = (32.0, 32.0), scale: float = 10.0) -> np.ndarray:
    """68 plausible points (a ring for the jaw, clusters for the inner parts)."""
    rng = np.random.default_rng(1)
    base = rng.uniform(-1, 1, (68, 2))
    base[36] = (-0.8, -0.3)
    base[45] = (0.8, -0.3)
    return (base * scale + np.asarray(center)).astype(np.float32)


def write_300w(root: Path, n: int = 10) -> Path:
    folder = root / "300w"
    for i in range(n):
        sub = folder / ("afw" if i % 2 else "helen/trainset")
        write_image(sub / f"img_{i}.jpg", (64, 64), seed=i)
        (sub / f"img_{i}.pts").write_text(pts_text(face_points()))
    return folder


def write_all(root: Path) -> Path:
    write_utkface(root)
    write_fer2013(root)
    write_lfw(root)
    write_celeba(root)
    write_300w(root)
    return root
