"""The service's C heap care (facefuse.service.heap): a cap on glibc's arenas and trims at
most once a second from the model thread."""

from __future__ import annotations

import platform

import pytest

from facefuse.service import heap


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt and malloc_trim are glibc's")
def test_glibc_takes_the_arena_cap_and_trims() -> None:
    assert heap.limit_arenas(heap.ARENAS)
    blocks = [bytearray(4096) for _ in range(20000)]  # freed: pages to hand back
    del blocks
    heap.trim()  # whether pages were free depends on the heap; that it runs is the point


def test_the_trimmer_trims_at_most_once_a_period(monkeypatch) -> None:
    calls, now = [], [100.0]
    monkeypatch.setattr(heap, "trim", lambda: calls.append(now[0]))
    monkeypatch.setattr(heap.time, "monotonic", lambda: now[0])
    trimmer = heap.Trimmer(every_s=1.0)
    for t in (100.2, 100.9, 101.0, 101.5, 101.99, 102.0, 105.0):
        now[0] = t
        trimmer.maybe()
    assert calls == [101.0, 102.0, 105.0]


def test_without_glibc_nothing_is_done(monkeypatch) -> None:
    monkeypatch.setattr(heap, "_libc", lambda: None)
    assert heap.limit_arenas() is False and heap.trim() is False
