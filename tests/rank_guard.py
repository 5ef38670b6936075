"""``facefuse`` under torchrun with a guard: a rank other than 0 that opens a file for writing
(or renames, replaces or removes one) under the folder named by ``FACEFUSE_GUARDED`` fails at
once, so a DDP run that passes wrote through rank 0 only. Run as
``torchrun ... tests/rank_guard.py <facefuse arguments>``."""

from __future__ import annotations

import builtins
import io
import os
import sys
from pathlib import Path

GUARDED = Path(os.environ["FACEFUSE_GUARDED"]).resolve()


def _inside(path: object) -> bool:
    try:
        return Path(os.fsdecode(path)).resolve().is_relative_to(GUARDED)  # type: ignore[arg-type]
    except TypeError:  # a file descriptor
        return False


def _refuse(what: str, path: object) -> None:
    raise PermissionError(f"rank {os.environ['RANK']} {what} {path} (only rank 0 writes)")


def _guard_open(real):
    def guarded(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and _inside(file):
            _refuse("opened for writing", file)
        return real(file, mode, *args, **kwargs)
    return guarded


def _guard_path_op(real, what: str):
    def guarded(src, *args, **kwargs):
        if _inside(src):
            _refuse(what, src)
        return real(src, *args, **kwargs)
    return guarded


if os.environ.get("RANK", "0") != "0":
    builtins.open = io.open = _guard_open(builtins.open)
    os.replace = _guard_path_op(os.replace, "replaced")
    os.rename = _guard_path_op(os.rename, "renamed")
    os.unlink = os.remove = _guard_path_op(os.unlink, "removed")

from facefuse.cli import main  # noqa: E402  (after the guard)

sys.exit(main(sys.argv[1:]))
