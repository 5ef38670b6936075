"""Files shipped inside the package.

``astronaut.jpg``: Eileen Collins, NASA portrait (public domain), the 512x512 copy that
scikit-image distributes as ``skimage.data.astronaut()``; the analyzer's offline demo input.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).parent


def demo_image_path() -> Path:
    """The embedded demo photo."""
    return ASSETS / "astronaut.jpg"
