"""The optional parts of facefuse and what a missing one looks like to a user.

``pip install facefuse`` (the core) runs every inference command on numpy, OpenCV, ONNX
Runtime and Pillow. ``pip install 'facefuse[train]'`` adds what training, experiments,
export and import need; ``pip install 'facefuse[gallery]'`` adds faiss-cpu for the
persistent face gallery (:mod:`facefuse.gallery`); ``pip install 'facefuse[serve]'`` adds
FastAPI, uvicorn and python-multipart for ``facefuse serve`` (:mod:`facefuse.service`);
``pip install 'facefuse[batch]'`` adds pyarrow for ``facefuse batch`` and ``pip install
'facefuse[ray]'`` Ray Data for its Ray engine (:mod:`facefuse.batch`). Code
that needs an extra imports it where it is used; the command line turns a missing module of
an extra into one line (:func:`missing_extra_message`).
"""

from __future__ import annotations

import importlib.util

#: import names of the training extra's packages
TRAINING_MODULES = ("torch", "torchvision", "timm", "sklearn", "matplotlib", "onnx")
INSTALL_TRAINING = "pip install 'facefuse[train]'"
#: import names of the gallery extra's packages
GALLERY_MODULES = ("faiss",)
INSTALL_GALLERY = "pip install 'facefuse[gallery]'"
#: import names of the serve extra's packages (python-multipart is ``python_multipart``)
SERVE_MODULES = ("fastapi", "uvicorn", "python_multipart")
INSTALL_SERVE = "pip install 'facefuse[serve]'"
#: import names of the batch extra's packages (``facefuse batch``: Parquet output)
BATCH_MODULES = ("pyarrow",)
INSTALL_BATCH = "pip install 'facefuse[batch]'"
#: import names of the ray extra's packages (``facefuse batch --engine ray``)
RAY_MODULES = ("ray",)
INSTALL_RAY = "pip install 'facefuse[ray]'"


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


def require_gallery_extra(what: str) -> None:
    """Raise :class:`MissingExtra` naming ``what`` when faiss (the gallery extra) is missing.

    Raises:
        MissingExtra: ``"<what> needs the gallery extra (faiss is not installed): pip
            install 'facefuse[gallery]'"``.
    """
    if not installed("faiss"):
        raise MissingExtra(f"{what} needs the gallery extra (faiss is not installed): "
                           f"{INSTALL_GALLERY}")


def require_serve_extra(what: str) -> None:
    """Raise :class:`MissingExtra` naming ``what`` when a package of the serve extra is
    missing.

    Raises:
        MissingExtra: ``"<what> needs the serve extra (fastapi missing): pip install
            'facefuse[serve]'"``.
    """
    missing = [m for m in SERVE_MODULES if not installed(m)]
    if missing:
        raise MissingExtra(f"{what} needs the serve extra ({', '.join(missing)} missing): "
                           f"{INSTALL_SERVE}")


def require_batch_extra(what: str, engine: str = "local") -> None:
    """Raise :class:`MissingExtra` naming ``what`` when pyarrow (the batch extra) or, for
    ``engine`` ``ray``, Ray (the ray extra, which brings pyarrow too) is missing.

    Raises:
        MissingExtra: ``"<what> needs the ray extra (ray is not installed): pip install
            'facefuse[ray]'"``, or the same for the batch extra and pyarrow.
    """
    if engine == "ray" and not installed("ray"):
        raise MissingExtra(f"{what} --engine ray needs the ray extra (ray is not "
                           f"installed): {INSTALL_RAY}")
    if not installed("pyarrow"):
        raise MissingExtra(f"{what} needs the batch extra (pyarrow is not installed): "
                           f"{INSTALL_BATCH}")


def missing_extra_message(exc: BaseException, what: str) -> str | None:
    """The one line to show for ``exc`` when it is a missing module of the training, the
    gallery, the serve, the ray or the batch extra (or a :class:`MissingExtra`), else
    None."""
    if isinstance(exc, MissingExtra):
        return str(exc)
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    for modules, extra, install in ((TRAINING_MODULES, "training", INSTALL_TRAINING),
                                    (GALLERY_MODULES, "gallery", INSTALL_GALLERY),
                                    (SERVE_MODULES, "serve", INSTALL_SERVE),
                                    (RAY_MODULES, "ray", INSTALL_RAY),
                                    (BATCH_MODULES, "batch", INSTALL_BATCH)):
        if top in modules:
            return f"{what} needs the {extra} extra ({exc.name} is not installed): {install}"
    return None
