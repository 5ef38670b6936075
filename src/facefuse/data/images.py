"""Opening face images safely: cheap structural checks for readers, full decoding for caches.

Readers call :func:`check_image_file` on every file (header parse plus a trailer check that
catches truncated JPEG/PNG files without decoding pixels). The cache and the analyzer call
:func:`load_rgb`, which decodes fully and normalises every mode (grayscale, RGBA, palette,
16-bit) to 8-bit RGB, applying EXIF orientation.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".gif"})
#: Decoding refuses images above this many pixels (a decompression-bomb guard).
MAX_PIXELS: int = 80_000_000


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file and the problem."""


def is_image_name(path: str | Path) -> bool:
    """True when the file name has an image suffix (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _trailer_problem(path: Path, fmt: str | None) -> str | None:
    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(0, size - 64))
        tail = f.read()
    if fmt == "JPEG" and b"\xff\xd9" not in tail:
        return "truncated JPEG (no end-of-image marker)"
    if fmt == "PNG" and b"IEND" not in tail:
        return "truncated PNG (no IEND chunk)"
    return None


def check_image_file(path: str | Path) -> str | None:
    """Return why ``path`` is not a usable image, or ``None`` when it looks fine.

    Checks, without decoding pixels: the file exists and is not empty; an image decoder
    recognises its header; its size is positive and below :data:`MAX_PIXELS`; JPEG and PNG
    files end with their end marker (a truncated download fails here).
    """
    path = Path(path)
    try:
        if not path.is_file():
            return "file does not exist"
        if path.stat().st_size == 0:
            return "zero-byte file"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                fmt, (w, h) = im.format, im.size
    except UnidentifiedImageError:
        return "not an image (no decoder recognises the file)"
    except Image.DecompressionBombError:
        return f"image too large (over {MAX_PIXELS} pixels)"
    except OSError as exc:
        return f"unreadable image ({exc})"
    if w <= 0 or h <= 0:
        return f"image has no pixels ({w}x{h})"
    if w * h > MAX_PIXELS:
        return f"image too large ({w}x{h} = {w * h} pixels, limit {MAX_PIXELS})"
    return _trailer_problem(path, fmt)


def to_rgb_uint8(im: Image.Image) -> np.ndarray:
    """Convert any PIL image mode to an HxWx3 uint8 RGB array.

    16-bit grayscale is scaled down by its true range (not clipped); alpha is composited on
    white so transparent backgrounds do not turn black.
    """
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        gray = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        gray = ((arr - lo) / max(hi - lo, 1e-12) * 255.0 + 0.5).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS,
             draft_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file to HxWx3 uint8 RGB, EXIF orientation applied.

    Args:
        path: the image file.
        max_pixels: refuse images above this many pixels.
        draft_size: for JPEG, let the decoder downscale by a power of two while keeping at
            least this size (much faster when the target is small).

    Raises:
        ImageError: naming the file and what is wrong (missing, empty, not an image,
            truncated or corrupt data, too large).
    """
    path = Path(path)
    try:
        if not path.is_file():
            problem: str | np.ndarray = "file does not exist"
        elif path.stat().st_size == 0:
            problem = "zero-byte file"
        else:
            problem = _decode(path, max_pixels, draft_size)
    except OSError as exc:
        problem = f"corrupt or truncated image data ({exc})"
    if isinstance(problem, np.ndarray):
        return problem
    raise ImageError(f"{path}: {problem}")


def decode_rgb(data: bytes, name: str = "<upload>", max_pixels: int = MAX_PIXELS
               ) -> np.ndarray:
    """:func:`load_rgb` for an image's bytes in memory (an upload); ``name`` is what its
    errors call it.

    Raises:
        ImageError: naming ``name`` and what is wrong (empty, not an image, corrupt, too
            large).
    """
    rgb = _decode(io.BytesIO(data), max_pixels, None) if data else "empty file (no bytes)"
    if isinstance(rgb, np.ndarray):
        return rgb
    raise ImageError(f"{name}: {rgb}")


def _decode(source: Path | io.BytesIO, max_pixels: int,
            draft_size: tuple[int, int] | None) -> np.ndarray | str:
    """The decoded RGB array, or why there is none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                if im.size[0] * im.size[1] > max_pixels:
                    return (f"image too large ({im.size[0]}x{im.size[1]} pixels, limit "
                            f"{max_pixels}); downscale it first")
                if draft_size is not None and im.format == "JPEG":
                    im.draft("RGB", draft_size)
                return to_rgb_uint8(ImageOps.exif_transpose(im))
    except UnidentifiedImageError:
        return "not an image (no decoder recognises the file)"
    except Image.DecompressionBombError as exc:
        return f"image too large ({exc})"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"corrupt or truncated image data ({exc})"
