"""The optional parts of facefuse and what a missing one looks like to a user.

``pip install facefuse`` (the core) runs every inference command on numpy, OpenCV, ONNX
Runtime and Pillow. ``pip install 'facefuse[train]'`` adds what training, experiments,
export and import need. Code that needs the extra imports it where it is used; the command
line turns a missing module of the extra into one line (:func:`missing_extra_message`).
"""

from __future__ import annotations

import importlib.util

#: import names of the training extra's packages
TRAINING_MODULES = ("torch", "torchvision", "timm", "sklearn", "matplotlib", "onnx")
INSTALL_TRAINING = "pip install 'facefuse[train]'"


class MissingExtra(ImportError):
    """A feature was asked for whose packages are not installed; the message says which
    extra to install."""


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (found, without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, a broken installation
        return False


def has_training_extra() -> bool:
    """Whether torch (the training extra's core) can be imported."""
    return installed("torch")


def require_training_extra(what: str) -> None:
    """Raise :class:`MissingExtra` naming ``what`` when the training extra is missing.

    Raises:
        MissingExtra: ``"<what> needs the training extra: pip install 'facefuse[train]'"``.
    """
    missing = [m for m in TRAINING_MODULES if not installed(m)]
    if missing:
        raise MissingExtra(f"{what} needs the training extra ({', '.join(missing)} "
                           f"missing): {INSTALL_TRAINING}")


def missing_extra_message(exc: BaseException, what: str) -> str | None:
    """The one line to show for ``exc`` when it is a missing module of the training extra
    (or a :class:`MissingExtra`), else None."""
    if isinstance(exc, MissingExtra):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name \
            and exc.name.split(".")[0] in TRAINING_MODULES:
        return f"{what} needs the training extra ({exc.name} is not installed): " \
               f"{INSTALL_TRAINING}"
    return None
