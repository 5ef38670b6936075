"""describe_largest_faces: each photo's largest face, each identity network's descriptors of
it and of its mirror image, as the LFW benchmark and the fusion fitting read them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facefuse.evaluation.identity_faces import describe_largest_faces
from facefuse.inference.identity import FusedIdentity
from facefuse.weights import shipped_identity_path
from tests.paths import SHARED_DATA

LFW = SHARED_DATA / "lfw" / "lfw"


@pytest.mark.skipif(not LFW.is_dir(), reason="../shared/data/lfw is not here")
def test_descriptors_of_the_largest_face_match_the_networks(tmp_path: Path) -> None:
    photos = [LFW / "Colin_Powell" / f"Colin_Powell_000{i}.jpg" for i in (1, 2)]
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((120, 120, 3), 128, np.uint8))
    fusion = FusedIdentity.read(shipped_identity_path())
    got = describe_largest_faces([*photos, blank], fusion.networks, detector="mtcnn",
                                 small_image_side=0)
    assert got.found.tolist() == [True, True, False]
    for net, plain, mirrored in zip(fusion.networks, got.plain, got.mirrored, strict=True):
        assert plain.shape == (3, net.spec.dim) and np.isnan(plain[2]).all()
        assert np.isfinite(plain[:2]).all() and np.isfinite(mirrored[:2]).all()
        assert not np.allclose(plain[:2], mirrored[:2])  # the mirror image is another view
    # the same person's two photos: each network finds them alike
    d = [p[:2] / np.linalg.norm(p[:2], axis=1, keepdims=True) for p in got.plain]
    assert all(float(x[0] @ x[1]) > 0.5 for x in d)
