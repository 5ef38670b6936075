"""The face analyzer: detect every face, crop (or align) it, and predict every task of a
multi-task checkpoint, with faces from many images batched together on the model.

Results are frozen dataclasses with ``to_dict()`` and ``to_dataframe()``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facefuse.config import check_whole
from facefuse.data.images import MAX_PIXELS, ImageError, load_rgb, to_rgb_uint8
from facefuse.detection.detectors import (
    Detection,
    FaceDetector,
    FullFrameDetector,
    build_detector,
    landmark_box,
    square_around,
    square_crop,
)
from facefuse.identity_format import ARCFACE_TEMPLATE_112
from facefuse.inference.alignment import align_face
from facefuse.inference.face_model import FaceModel
from facefuse.inference.identity import FusedIdentity
from facefuse.inference.identity_heads import IdentityHeads
from facefuse.inference.inputs import VIDEO_SUFFIXES, expand_inputs  # noqa: F401 (API)
from facefuse.inference.landmark_refiner import LandmarkRefiner
from facefuse.inference.results import FaceResult, ImageResult  # noqa: F401 (API)
from facefuse.runtime.graph import check_device_name
from facefuse.runtime.threads import limit_blas_threads
from facefuse.tasks import five_points_from_68

log = logging.getLogger(__name__)

#: images decoded and predicted together by analyze_many / iter_analyze
BATCH_IMAGES = 32
#: images whose longer side is at most this are treated as possible face crops when the
#: detector finds nothing in them (see FaceAnalyzer's ``small_image_side``)
SMALL_IMAGE_SIDE = 160
#: a small image is searched again enlarged to this longer side, with a replicated border
ENLARGED_SIDE = 320
ENLARGE_BORDER = 0.25
#: ... and, failing that, taken whole as the face when its sides differ by at most this ratio
WHOLE_IMAGE_ASPECT = 1.5
#: a small, about square image is a face crop (the whole image is the face) when its largest
#: face spans at least this share of its shorter side
TIGHT_CROP_SHARE = 0.5


def _load_plugin(spec: Any, kind: type, what: str, shipped: Any, load: Any) -> Any:
    """A plug-in given as None, an instance of ``kind``, ``"shipped"`` (``shipped()`` gives
    its path) or a path (read by ``load``)."""
    if spec is None or isinstance(spec, kind):
        return spec
    if not isinstance(spec, (str, Path)):
        raise TypeError(f"{what} must be 'shipped', a path, a {kind.__name__} or None, got "
                        f"{type(spec).__name__}")
    return load(shipped() if str(spec) == "shipped" else spec)


class FaceAnalyzer:
    """Detect, crop or align, and predict every task of a checkpoint.

    Args:
        model: a checkpoint path, a :class:`FaceModel`, or None for the shipped model.
        tasks: tasks to report (default: every head of the model).
        detector: a detector name (``mtcnn``, ``haar``, ``dlib_hog``, ``full_frame``) or
            instance.
        device: ``auto`` (CUDA when available to what runs the model), ``cpu``, ``cuda`` or
            ``cuda:N``.
        margin: crop margin around the face's landmark box as the detector places it (share
            of the box side, each side); None (default): the margin the model was trained
            with, from its metadata (``crop_margin``; 0.2 when it does not say).
        align: when the model has a landmark head, warp each face so its five points meet
            a canonical template before predicting (a second pass on the aligned crop).
        min_face: faces smaller than this many pixels are skipped.
        batch_size: faces per model batch (across images).
        max_pixels: images above this many pixels are refused with a clear error.
        flip: test-time flip (see :class:`FaceModel`): each face and its mirror image are
            predicted together and averaged. Applies when the analyzer loads the model; a
            :class:`FaceModel` passed in keeps its own setting.
        tta_margins: further crop margins for test-time augmentation: each face is also
            cut with these margins and every prediction but the landmarks is averaged over
            all its crops (:meth:`FaceModel.raw_views`); each margin adds a model pass
            (``docs/MODEL_CARD.md`` measures ``(0.15, 0.25)``). Not with ``align``.
        landmark_refiner: when the model has a landmark head, its 68 points are refined on
            the photo by this cascade (:mod:`facefuse.inference.landmark_refiner`):
            ``"shipped"`` (the one in the package), a refiner path or instance, or None to
            report the model's points as they are. Alignment uses the refined points.
        backend: ``auto`` (default): a model's ONNX graph runs in ONNX Runtime (the shipped
            model is one; no torch needed); a PyTorch checkpoint is exported to ONNX Runtime
            in memory on the CPU (about a second) or run by PyTorch on a GPU
            (:meth:`FaceModel.load`); ``torch`` or ``onnxruntime`` to choose. Applies when
            the analyzer loads the model, as ``flip`` does; ``analyzer.model.backend`` says
            which one runs.
        identity: where each face's identity embedding (``predictions["embedding"]``) comes
            from: ``"shipped"``, the fused embedding of the identity networks shipped in the
            package (:mod:`facefuse.inference.identity`), aligned on the detector's five
            points or, for a detector without them, on five points from the model's
            landmarks; a fused identity JSON path or :class:`FusedIdentity`; None for the
            multi-task model's own identity head; or ``"auto"`` (default): the shipped
            networks, unless ``model`` is a checkpoint of your own with an identity head,
            whose embedding is then kept. Loaded only when the embedding is asked for (the
            ``identity`` or ``embedding`` task); :attr:`verification_threshold` is the
            matching decision threshold.
        identity_heads: heads on the identity networks' features for age, gender, race,
            emotion and the attributes, fused with the model's own heads
            (:mod:`facefuse.inference.identity_heads`; ``docs/MODEL_CARD.md`` has what they
            gain): ``"shipped"``, a heads file or :class:`IdentityHeads`, None for the
            model's heads alone, or ``"auto"`` (default): the shipped heads with the shipped
            model (they were fitted to fuse with its heads), none with a model of your own.
            They run the identity networks on every face even when no embedding is asked
            for; only the tasks the analyzer reports are replaced.
        small_image_side: an image whose longer side is at most this many pixels may itself
            be a face crop (a 48x48 FER2013 face, a 90x90 LFW crop): when the detector finds
            no face in it, it is searched again enlarged with a replicated border; an about
            square one whose face fills it is taken whole as the face, with the detector's
            five points (``found_by`` ``"face_crop"``), or, where no face is found, without
            them (``"whole_image"``); see :meth:`detect`. 0 turns this off.
        blas_threads: threads for numpy's BLAS in this process (default 1: its threads
            otherwise contend with ONNX Runtime's and a photo takes about 1.8x as long on
            a 2-core CPU; :mod:`facefuse.runtime.threads`); None leaves them as they are.
    """

    def __init__(self, tasks: Sequence[str] | None = None,
                 model: str | Path | FaceModel | None = None,
                 detector: str | FaceDetector = "mtcnn", device: str = "auto",
                 margin: float | None = None, align: bool = False, min_face: int = 24,
                 batch_size: int = 64, max_pixels: int = MAX_PIXELS,
                 flip: bool = True, tta_margins: Sequence[float] = (),
                 landmark_refiner: str | Path | LandmarkRefiner | None = "shipped",
                 backend: str = "auto",
                 identity: str | Path | FusedIdentity | None = "auto",
                 identity_heads: str | Path | IdentityHeads | None = "auto",
                 small_image_side: int = SMALL_IMAGE_SIDE,
                 blas_threads: int | None = 1) -> None:
        check_device_name(device)
        limit_blas_threads(blas_threads)
        for name, value, least in (("min_face", min_face, 0), ("batch_size", batch_size, 1),
                                   ("max_pixels", max_pixels, 1),
                                   ("small_image_side", small_image_side, 0)):
            check_whole(name, value, least)
        own_model = model is not None
        if model is None:
            from facefuse.weights import shipped_model_path

            model = shipped_model_path()
        self.model = model if isinstance(model, FaceModel) else \
            FaceModel.load(model, device, flip=flip, backend=backend)
        unknown = set(tasks or []) - set(self.model.tasks) - {"embedding"}
        if unknown:
            raise ValueError(f"the model has no {sorted(unknown)} head; it predicts "
                             f"{', '.join(self.model.tasks)}")
        self.tasks = list(tasks) if tasks else list(self.model.tasks)
        self.detector = detector if isinstance(detector, FaceDetector) else \
            build_detector(detector, **({"min_size": max(min_face, 12)}
                                        if detector in ("haar", "mtcnn") else {}))
        margin = self.model.crop_margin if margin is None else float(margin)
        self.margin, self.align = margin, align
        self.tta_margins = tuple(float(m) for m in tta_margins)
        for m in (margin, *self.tta_margins):
            if not 0.0 <= m <= 1.0:
                raise ValueError(f"crop margins must be within [0, 1] (share of the face box "
                                 f"on each side), got {m}")
        if len(set((margin, *self.tta_margins))) != 1 + len(self.tta_margins):
            raise ValueError(f"tta_margins {list(self.tta_margins)} repeat a margin (the main "
                             f"crop's is {margin})")
        if self.tta_margins and align:
            raise ValueError("tta_margins averages unaligned crops; it cannot be combined "
                             "with align")
        self.min_face, self.batch_size = min_face, batch_size
        self.small_image_side = small_image_side
        self.max_pixels = max_pixels
        self.refiner = self._load_refiner(landmark_refiner) \
            if "landmarks" in self.model.tasks else None
        wants_embedding = "identity" in self.tasks or "embedding" in self.tasks
        if identity == "auto":
            identity = None if own_model and "identity" in self.model.tasks else "shipped"
        self.identity = self._load_identity(identity) if wants_embedding else None
        if identity_heads == "auto":
            identity_heads = None if own_model else "shipped"
        heads = self._load_identity_heads(identity_heads)
        self.identity_heads = heads if heads is not None \
            and set(heads.tasks) & set(self.tasks) else None
        #: the identity networks run on every face: the embedding's, else the heads' own
        self.describer = self.identity
        if self.identity_heads is not None:
            needed = {f.split(":")[0] for f in self.identity_heads.features}
            if self.describer is None or \
                    not needed <= {n.name for n in self.describer.networks}:
                self.describer = self._load_identity("shipped")
        if self.describer is not None and "landmarks" not in self.model.tasks \
                and not self.detector.gives_five_points:
            raise ValueError(f"the identity networks align faces on five points: the "
                             f"{self.detector.name} detector gives none and the model has no "
                             f"landmark head (use the mtcnn detector, or identity=None and "
                             f"identity_heads=None)")

    @staticmethod
    def _load_identity(spec: str | Path | FusedIdentity | None) -> FusedIdentity | None:
        from facefuse.weights import shipped_identity_path

        return _load_plugin(spec, FusedIdentity, "identity", shipped_identity_path,
                            FusedIdentity.read)

    @staticmethod
    def _load_identity_heads(spec: str | Path | IdentityHeads | None) -> IdentityHeads | None:
        from facefuse.weights import shipped_identity_heads_path

        return _load_plugin(spec, IdentityHeads, "identity_heads", shipped_identity_heads_path,
                            IdentityHeads.read)

    @property
    def verification_threshold(self) -> float:
        """The cosine above which two embeddings of this analyzer are the same person: the
        fused identity's, else the model's (chosen on LFW), else 0.5."""
        if self.identity is not None:
            return self.identity.threshold
        return float(self.model.meta.get("verification_threshold", 0.5))

    @staticmethod
    def _load_refiner(spec: str | Path | LandmarkRefiner | None) -> LandmarkRefiner | None:
        from facefuse.weights import shipped_refiner_path

        return _load_plugin(spec, LandmarkRefiner, "landmark_refiner", shipped_refiner_path,
                            LandmarkRefiner.load)

    # -- one image ------------------------------------------------------------------------
    def analyze(self, image: str | Path | np.ndarray) -> ImageResult:
        """Analyze one image (a path or an HxWx3 uint8 RGB array). A file that cannot be
        read raises :class:`~facefuse.data.images.ImageError` naming it."""
        return self.analyze_many([image], raise_errors=True)[0]

    # -- many images ------------------------------------------------------------------------
    def analyze_many(self, images: Iterable[str | Path | np.ndarray],
                     raise_errors: bool = False,
                     batch_images: int = BATCH_IMAGES) -> list[ImageResult]:
        """Analyze several images, one result each, in order; the faces of each
        ``batch_images`` images share model batches, and only those images are held
        decoded at a time. A bad file gives a result with ``error`` set (or raises, with
        ``raise_errors``). :meth:`iter_analyze` gives the results as they come."""
        return list(self.iter_analyze(images, raise_errors, batch_images))

    def iter_analyze(self, images: Iterable[str | Path | np.ndarray],
                     raise_errors: bool = False,
                     batch_images: int = BATCH_IMAGES) -> Iterator[ImageResult]:
        """:meth:`analyze_many`, yielding each result as soon as its batch of
        ``batch_images`` images is done: memory stays bounded however many images (or
        however long a generator of them) it is given."""
        check_whole("batch_images", batch_images, 1)
        chunk: list[str | Path | np.ndarray] = []
        for item in images:
            chunk.append(item)
            if len(chunk) == batch_images:
                yield from self._analyze_chunk(chunk, raise_errors)
                chunk = []
        if chunk:
            yield from self._analyze_chunk(chunk, raise_errors)

    def _analyze_chunk(self, images: Sequence[str | Path | np.ndarray],
                       raise_errors: bool) -> list[ImageResult]:
        """Every image of ``images`` decoded, detected and predicted together."""
        loaded: list[tuple[str, np.ndarray | None, str | None]] = []
        for item in images:
            name = "<array>" if isinstance(item, np.ndarray) else str(item)
            try:
                rgb = self._to_rgb(item, self.max_pixels)
                loaded.append((name, rgb, None))
            except ImageError as exc:
                if raise_errors:
                    raise
                log.warning("%s", exc)
                loaded.append((name, None, str(exc)))
        views: list[list[np.ndarray]] = [[] for _ in range(1 + len(self.tta_margins))]
        owners: list[tuple[int, Detection]] = []
        for i, (_, rgb, _) in enumerate(loaded):
            if rgb is None:
                continue
            dets = self.detect(rgb)
            for view, image_crops in zip(views, self.crop_views(rgb, dets), strict=True):
                view.extend(image_crops)
            owners.extend((i, det) for det in dets)
        preds = self._predict(views, owners, loaded)
        per_image: list[list[FaceResult]] = [[] for _ in loaded]
        for (i, det), (pred, landmarks, features) in zip(owners, preds, strict=True):
            faces = per_image[i]
            faces.append(FaceResult(len(faces), det.box, det.score, pred, landmarks,
                                    det.found_by, features))
        return [ImageResult(name, 0 if rgb is None else rgb.shape[1],
                            0 if rgb is None else rgb.shape[0], tuple(per_image[i]), err)
                for i, (name, rgb, err) in enumerate(loaded)]

    def read_image(self, item: str | Path | np.ndarray) -> np.ndarray:
        """``item`` (a path, or an HxW / HxWx1 / HxWx3 / HxWx4 uint8 or uint16 array) as the HxWx3
        uint8 RGB array :meth:`analyze` works on, under this analyzer's pixel limit; raises
        ``ImageError`` for what it cannot read."""
        return self._to_rgb(item, self.max_pixels)

    @staticmethod
    def _to_rgb(item: str | Path | np.ndarray, max_pixels: int = MAX_PIXELS) -> np.ndarray:
        if isinstance(item, np.ndarray):
            arr = item
            if arr.ndim == 3 and arr.shape[2] == 1:  # grayscale with a channel axis
                arr = arr[..., 0]
            if arr.ndim == 2:
                arr = np.repeat(arr[..., None], 3, axis=2)
            if arr.ndim != 3 or arr.shape[2] not in (3, 4):
                raise ImageError(f"<array>: expected HxW, HxWx1, HxWx3 or HxWx4, got "
                                 f"{arr.shape}")
            if arr.shape[0] == 0 or arr.shape[1] == 0:
                raise ImageError(f"<array>: empty image ({arr.shape[1]}x{arr.shape[0]} pixels)")
            if arr.dtype == np.uint16:
                arr = (arr / 257).round().astype(np.uint8)
            if arr.dtype != np.uint8:
                raise ImageError(f"<array>: expected uint8 or uint16 pixels, got {arr.dtype}")
            if arr.shape[0] * arr.shape[1] > max_pixels:
                raise ImageError(f"<array>: image too large ({arr.shape[1]}x{arr.shape[0]} "
                                 f"pixels, limit {max_pixels})")
            if arr.shape[2] == 4:  # alpha composited on white, the same way as for files
                from PIL import Image

                return to_rgb_uint8(Image.fromarray(arr, "RGBA"))
            return np.ascontiguousarray(arr)
        if not isinstance(item, (str, Path)):
            raise TypeError(f"expected an image path or an HxWx3 uint8 RGB array, got "
                            f"{type(item).__name__}")
        return load_rgb(item, max_pixels=max_pixels)

    def _predict(self, views: list[list[np.ndarray]], owners: list[tuple[int, Detection]],
                 loaded: list) -> list[tuple[dict[str, Any], tuple | None, np.ndarray]]:
        """Predictions per face from its crops (``views[k][j]``: view ``k`` of face ``j``, as
        :meth:`crop_views` cuts them), ``batch_size`` faces a model batch."""
        out: list[tuple[dict[str, Any], tuple | None, np.ndarray]] = []
        for start in range(0, len(owners), self.batch_size):
            who = owners[start:start + self.batch_size]
            preds, features, outputs = self.model.predict_views_and_features(
                [v[start:start + self.batch_size] for v in views])
            for (i, det), p in zip(who, preds, strict=True):
                if "landmarks" in p:  # image pixels, refined on the photo
                    p["landmarks"] = self.image_landmarks(np.asarray(p["landmarks"]), det,
                                                          loaded[i][1])
            if self.align and "landmarks" in self.model.tasks:
                aligned = [align_face(loaded[i][1], five_points_from_68(p["landmarks"]),
                                      self.model.size, zoom=0.8)
                           for (i, _), p in zip(who, preds, strict=True)]
                keep_landmarks = [p["landmarks"] for p in preds]
                preds, features, outputs = self.model.predict_views_and_features([aligned])
                for p, lm in zip(preds, keep_landmarks, strict=True):
                    p["landmarks"] = lm
            if self.describer is not None:
                self._identity_pass(who, preds, loaded, outputs)
            for p, f in zip(preds, features, strict=True):
                landmarks = None
                if "landmarks" in p:
                    landmarks = tuple((round(float(x), 1), round(float(y), 1))
                                      for x, y in p.pop("landmarks"))
                kept = {k: v for k, v in p.items() if k.split("_scores")[0] in self.tasks
                        or (k == "embedding" and ("identity" in self.tasks
                                                  or "embedding" in self.tasks))}
                out.append((kept, landmarks, f))
        return out

    def _identity_pass(self, who: list[tuple[int, Detection]], preds: list[dict[str, Any]],
                       loaded: list, outputs: dict[str, np.ndarray]) -> None:
        """Run the identity networks on each face (aligned on the detector's five points,
        else on five of the model's landmarks, in image pixels, else, for a whole-image face
        of a model without landmarks, on the ArcFace layout of its box); replace its
        embedding by their fused one (with ``identity``) and fuse the identity heads'
        predictions with the model's (with ``identity_heads``)."""
        assert self.describer is not None
        images, points = [], []
        for (i, det), p in zip(who, preds, strict=True):
            images.append(loaded[i][1])
            if det.landmarks is not None:
                points.append(det.landmarks)
            elif "landmarks" in p:
                points.append(five_points_from_68(np.asarray(p["landmarks"])))
            else:
                x0, y0, x1, y1 = det.box
                points.append(ARCFACE_TEMPLATE_112 / 112.0 * [x1 - x0, y1 - y0] + [x0, y0])
        embeddings, features = self.describer.describe(images, points)
        if self.identity is not None:
            for p, emb in zip(preds, embeddings, strict=True):
                p["embedding"] = emb.round(6).tolist()
        if self.identity_heads is not None:
            self.identity_heads.apply(preds, features, outputs, self.model.decoder, self.tasks)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """The detector's faces in an RGB image, those under ``min_face`` pixels left out.

        A small image (longer side at most ``small_image_side``) may itself be a face crop
        (a 48x48 FER2013 face, a 90x90 LFW crop). When the detector finds no face in it, it
        is searched again enlarged, with a replicated border (a tight crop has no margin for
        the detector to see). A small, about square image (sides within
        :data:`WHOLE_IMAGE_ASPECT`, no smaller than ``min_face``) whose largest face spans at
        least :data:`TIGHT_CROP_SHARE` of its shorter side is a face crop: the whole image is
        the face (as the model saw such crops in training), with the detector's five points
        kept for alignment, marked ``found_by="face_crop"``; where no face is found at all,
        the whole image is still taken, marked ``found_by="whole_image"``."""
        dets = self._detect_sized(rgb)
        h, w = rgb.shape[:2]
        if isinstance(self.detector, FullFrameDetector) \
                or not 0 < max(h, w) <= self.small_image_side:
            return dets
        if not dets:
            dets = self._detect_enlarged(rgb)
        if max(h, w) > WHOLE_IMAGE_ASPECT * min(h, w) or min(h, w) < self.min_face:
            return dets  # a face crop is about square, and no smaller than min_face
        whole = (0.0, 0.0, float(w), float(h))
        if not dets:
            return [Detection(whole, 0.0, None, "whole_image")]
        largest = max(dets, key=lambda d: d.width * d.height)
        if min(largest.width, largest.height) < TIGHT_CROP_SHARE * min(h, w):
            return dets  # a small photo with a small face in it: not a face crop
        return [Detection(whole, largest.score, largest.landmarks, "face_crop")]

    def _detect_enlarged(self, rgb: np.ndarray) -> list[Detection]:
        """The detector's faces in ``rgb`` enlarged to :data:`ENLARGED_SIDE` with a
        replicated border of :data:`ENLARGE_BORDER`, in ``rgb``'s pixels."""
        import cv2

        h, w = rgb.shape[:2]
        border = int(round(ENLARGE_BORDER * max(h, w)))
        scale = ENLARGED_SIDE / (max(h, w) + 2 * border)
        padded = np.pad(rgb, ((border, border), (border, border), (0, 0)), mode="edge")
        size = (max(1, round(padded.shape[1] * scale)), max(1, round(padded.shape[0] * scale)))
        big = cv2.resize(padded, size, interpolation=cv2.INTER_LINEAR)
        sx, sy = size[0] / padded.shape[1], size[1] / padded.shape[0]
        found = []
        for d in self.detector.detect(big):
            x0, y0, x1, y1 = d.box
            box = (x0 / sx - border, y0 / sy - border, x1 / sx - border, y1 / sy - border)
            points = None if d.landmarks is None else \
                (np.asarray(d.landmarks) / np.array([sx, sy]) - border).astype(np.float32)
            found.append(Detection(box, d.score, points))
        return [d for d in found if min(d.width, d.height) >= self.min_face]

    def _detect_sized(self, rgb: np.ndarray) -> list[Detection]:
        return [d for d in self.detector.detect(rgb) if min(d.width, d.height) >= self.min_face]

    def face_box(self, det: Detection) -> tuple[float, float, float, float]:
        """The 68-landmark box that ``det`` stands for: by the detector's calibration, or,
        for a whole-image face, as the ``full_frame`` detector places it."""
        if det.found_by in ("whole_image", "face_crop"):
            return landmark_box(det.box, FullFrameDetector.box_calibration)
        return self.detector.face_box(det)

    def crops(self, rgb: np.ndarray, dets: Sequence[Detection],
              margin: float | None = None) -> list[np.ndarray]:
        """The model's input crop of each detection: the square around the face's landmark
        box (as the detector's calibration places it), widened by the margin (the
        analyzer's unless given)."""
        margin = self.margin if margin is None else margin
        return [square_crop(rgb, self.face_box(d), margin, self.model.size) for d in dets]

    def crop_views(self, rgb: np.ndarray, dets: Sequence[Detection]) -> list[list[np.ndarray]]:
        """:meth:`crops`, then one list of crops per ``tta_margins`` entry (the views
        :meth:`FaceModel.predict_views` averages)."""
        return [self.crops(rgb, dets, m) for m in (self.margin, *self.tta_margins)]

    def image_landmarks(self, crop_points: np.ndarray, det: Detection,
                        rgb: np.ndarray) -> np.ndarray:
        """The model's landmarks of face ``det`` (pixels of its main crop, as
        :meth:`FaceModel.predict_views` gives them) in pixels of the photo ``rgb``, refined
        on the photo when the analyzer has a landmark refiner."""
        points = self._to_image(crop_points, det)
        return points if self.refiner is None else self.refiner.refine(rgb, points)

    def _to_image(self, crop_points: np.ndarray, det: Detection) -> np.ndarray:
        """Crop-pixel landmarks (crop of ``model.size``) back to image pixels."""
        cx, cy, side = square_around(self.face_box(det), self.margin)
        scale = side / self.model.size
        return crop_points * scale + np.array([cx - side / 2, cy - side / 2])
