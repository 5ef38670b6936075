"""Names of the files the commands write for each input, so that two inputs of the same
name (``2019/IMG_1.jpg`` and ``2020/IMG_1.jpg``) never overwrite each other's results."""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


def output_stems(paths: Sequence[str | Path]) -> dict[str | Path, str]:
    """A unique base name for each input: its stem where no other input shares the stem,
    else its path below the inputs' common folder with ``__`` for each separator, suffix
    kept (``2019__IMG_1.jpg`` beside ``2020__IMG_1.jpg``). The same file given twice gets
    one name."""
    unique = list(dict.fromkeys(Path(os.path.abspath(p)) for p in paths))
    stems = Counter(p.stem for p in unique)
    root = Path(os.path.commonpath([str(p.parent) for p in unique])) if unique else Path()
    names = {p: p.stem if stems[p.stem] == 1 else "__".join(p.relative_to(root).parts)
             for p in unique}
    return {p: names[Path(os.path.abspath(p))] for p in paths}


def annotation_names(paths: Sequence[Path]) -> dict[Path, str]:
    """The file name of each input's annotated image in the ``--annotate`` folder: its
    :func:`output_stems` name plus ``.png``."""
    return {p: f"{stem}.png" for p, stem in output_stems(paths).items()}


def make_folder(path: str | Path, what: str) -> bool:
    """Create the folder ``path`` (and its parents) before a command does any work; where it
    cannot be made, print one line (``cannot write WHAT: reason``) and return False."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"facefuse: cannot write {what}: {exc.strerror or exc}", file=sys.stderr)
        return False
    return True


@dataclass
class Written:
    """What a command has written so far, for the line it prints when interrupted
    (``facefuse: interrupted; 12 image results written to out.jsonl``)."""

    where: str
    what: str = "result"
    count: int = 0

    def add(self, n: int = 1) -> None:
        self.count += n

    def line(self) -> str:
        return f"{self.count} {self.what}{'' if self.count == 1 else 's'} written to " \
               f"{self.where}"


class counted:  # noqa: N801  (used like a function: counted(out, written))
    """A text stream whose ``write`` of a whole line adds one to ``written``."""

    def __init__(self, stream: TextIO, written: Written) -> None:
        self.stream, self.written = stream, written

    def write(self, text: str) -> int:
        n = self.stream.write(text)
        self.written.add(text.count("\n"))
        return n
