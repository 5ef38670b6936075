"""The ``facefuse`` command: thin subcommands over the Python API, one module per command
group (``analyze``, ``video``, ``gallery``, ``model``, ``serve``, ``batch``, ``landmarks``),
the options they share (``options``: the analyzer options of every analyzing command;
``values``: argument types and the one error prefix; ``outputs``: output files), and the
parser that gathers them (``main``)."""

from facefuse.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
