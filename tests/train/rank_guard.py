"""``facefuse`` under torchrun with a guard: a rank other than 0 that opens a file for writing
(or renames, replaces or removes one) under the folder named by ``FACEFUSE_GUARDED`` fails at
once, so a DDP run that passes wrote through rank 0 only. ``FACEFUSE_STOP_AT=RUN:EPOCH``
stops every rank (Ctrl-C) after one step of that epoch of that run. Run as
``torchrun ... tests/train/rank_guard.py <facefuse arguments>``."""

from __future__ import annotations

import builtins
import io
import os
import sys
from pathlib import Path


def stop_after_one_step(engine) -> None:
    """Make ``engine``'s recipe raise KeyboardInterrupt after the first step of the next
    epoch it serves (a kill in the middle of an epoch)."""
    batches = engine.recipe.batches

    def one_step_then_stop(epoch):
        for i, batch in enumerate(batches(epoch)):
            if i == 1:
                raise KeyboardInterrupt
            yield batch

    engine.recipe.batches = one_step_then_stop


def _inside(path: object, folder: Path) -> bool:
    try:
        return Path(os.fsdecode(path)).resolve().is_relative_to(folder)  # type: ignore[arg-type]
    except TypeError:  # a file descriptor
        return False


def _guard(real, what: str, folder: Path, writes=lambda *a, **k: True):
    def guarded(path, *args, **kwargs):
        if writes(*args, **kwargs) and _inside(path, folder):
            raise PermissionError(f"rank {os.environ['RANK']} {what} {path} (only rank 0 "
                                  f"writes)")
        return real(path, *args, **kwargs)
    return guarded


def _install(folder: Path, stop: str | None) -> None:
    if os.environ.get("RANK", "0") != "0":
        opens_for_writing = lambda mode="r", *a, **k: any(c in mode for c in "wax+")  # noqa: E731
        builtins.open = io.open = _guard(builtins.open, "opened for writing", folder,
                                         opens_for_writing)
        os.replace = _guard(os.replace, "replaced", folder)
        os.rename = _guard(os.rename, "renamed", folder)
        os.unlink = os.remove = _guard(os.unlink, "removed", folder)
    if stop:
        from facefuse.train.engine import Engine

        run, epoch = stop.rsplit(":", 1)
        real = Engine.train_epoch

        def stopping(self, e):
            if self.name == run and e == int(epoch):
                stop_after_one_step(self)
            return real(self, e)

        Engine.train_epoch = stopping


if __name__ == "__main__":
    _install(Path(os.environ["FACEFUSE_GUARDED"]).resolve(), os.environ.get("FACEFUSE_STOP_AT"))
    from facefuse.cli import main

    sys.exit(main(sys.argv[1:]))
