"""The endpoints under ``/v1``: analysis (``analyze``, ``verify``) and galleries (create,
list, delete; enrol, list and remove faces and subjects; search). The handlers are plain
functions, run by FastAPI on its thread pool; each one that needs the model waits on the
model thread (:class:`~facefuse.service.batcher.MicroBatcher`)."""

from __future__ import annotations

import base64
import io
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, File, Query, Request, UploadFile
from pydantic import BaseModel, Field

from facefuse.gallery import EmptyGallery, FaceGallery, GalleryError
from facefuse.gallery.enrol import choose_face
from facefuse.inference.analyzer import FaceResult, ImageResult
from facefuse.service.core import Service, ServiceError, only_tasks
from facefuse.service.galleries import SharedGallery

analysis_router = APIRouter(prefix="/v1", tags=["analysis"])
gallery_router = APIRouter(prefix="/v1/galleries", tags=["galleries"])

Images = Annotated[list[UploadFile], File(description="one or more photos")]
Image = Annotated[UploadFile, File(description="a photo")]


def _service(request: Request) -> Service:
    return request.app.state.service


def _run(service: Service, uploads: list[UploadFile]) -> list[ImageResult]:
    return _decode_and_run(service, uploads)[1]


def _decode_and_run(service: Service, uploads: list[UploadFile]
                    ) -> tuple[list[np.ndarray], list[ImageResult]]:
    """The uploads decoded, and their results from the model thread."""
    images, names = service.read_uploads([(u.filename, u.file) for u in uploads])
    results = service.analyze(images, names)
    for r in results:
        if r.error:  # decoded above, so the analyzer's own refusal
            raise ServiceError(400, "bad_image", r.error)
    return images, results


def _png(rgb: np.ndarray, result: ImageResult) -> str:
    from facefuse.inference.drawing import draw_faces

    buffer = io.BytesIO()
    draw_faces(rgb, result).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _largest(result: ImageResult) -> FaceResult:
    face = result.largest_face()
    if face is None:
        raise ServiceError(400, "no_face", f"{result.source}: no face found")
    return face


def _box(face: FaceResult) -> list[float]:
    return [round(v, 1) for v in face.box]


# -- analysis -------------------------------------------------------------------------------
@analysis_router.post("/analyze", summary="every face of each photo, with its predictions")
def analyze(request: Request, files: Images,
            tasks: Annotated[str | None, Query(description="comma list of tasks (default: "
                                               "every head of the model)")] = None,
            annotate: Annotated[bool, Query(description="also return each photo with its "
                                            "faces drawn, base64 PNG")] = False
            ) -> dict[str, Any]:
    """Per photo, the JSON ``facefuse analyze`` writes (``source`` is the upload's file
    name), and with ``annotate=true`` an ``annotated_png`` field."""
    service = _service(request)
    wanted = service.check_tasks(tasks)
    images, results = _decode_and_run(service, files)
    if not annotate:
        return {"results": [only_tasks(r, wanted) for r in results]}
    return {"results": [{**only_tasks(r, wanted), "annotated_png": _png(rgb, r)}
                        for rgb, r in zip(images, results, strict=True)]}


@analysis_router.post("/verify", summary="are two photos the same person?")
def verify(request: Request, a: Image, b: Image,
           threshold: Annotated[float | None, Query(ge=-1, le=1, description="cosine "
                                "threshold (default: the identity embedding's own)")] = None
           ) -> dict[str, Any]:
    """The largest face of each photo compared by the cosine of their identity embeddings,
    as ``facefuse verify`` does: ``same_person`` is ``similarity > threshold``."""
    service = _service(request)
    ra, rb = _run(service, [a, b])
    fa, fb = _largest(ra), _largest(rb)
    if threshold is None:
        threshold = service.analyzer.verification_threshold
    score = float(np.asarray(fa.predictions["embedding"]) @
                  np.asarray(fb.predictions["embedding"]))
    return {"a": ra.source, "b": rb.source, "similarity": round(score, 4),
            "threshold": round(threshold, 4), "same_person": score > threshold,
            "faces_found": [len(ra.faces), len(rb.faces)], "boxes": [_box(fa), _box(fb)],
            "found_by": [fa.found_by, fb.found_by]}


# -- galleries ------------------------------------------------------------------------------
class NewGallery(BaseModel):
    name: str = Field(description="letters, digits, '.', '-', '_' (64 at most)")
    threshold: float | None = Field(None, ge=-1, le=1, description="cosine at or above "
                                    "which a search is a match (default: the embedding's own)")
    keep_images: bool = Field(False, description="keep each enrolled photo, so that the "
                              "gallery can be re-embedded for other weights (`facefuse "
                              "gallery reembed`)")


def _galleries(request: Request):
    galleries = _service(request).galleries
    if galleries is None:
        raise ServiceError(404, "no_galleries", "this service has no galleries (start it "
                           "with --gallery-root DIR)")
    return galleries


def _gallery(request: Request, name: str) -> FaceGallery | SharedGallery:
    return _galleries(request).get(name)


@gallery_router.post("", status_code=201, summary="create a gallery")
def create_gallery(request: Request, body: Annotated[NewGallery, Body()]) -> dict[str, Any]:
    gallery = _galleries(request).create(body.name, body.threshold, body.keep_images)
    return {"name": body.name, **gallery.info().to_dict()}


@gallery_router.get("", summary="the galleries, with their settings and sizes")
def list_galleries(request: Request) -> dict[str, Any]:
    galleries = _galleries(request)
    out = []
    for name in galleries.names():
        try:
            out.append({"name": name, **galleries.get(name).info().to_dict()})
        except (GalleryError, OSError) as exc:  # one unusable gallery hides not the rest
            out.append({"name": name, "error": str(exc)})
    return {"galleries": out}


@gallery_router.delete("/{gallery}", summary="delete a gallery and all its faces")
def delete_gallery(request: Request, gallery: str) -> dict[str, Any]:
    _galleries(request).delete(gallery)
    return {"deleted": "gallery", "gallery": gallery}


@gallery_router.post("/{gallery}/subjects/{subject}/faces", status_code=201,
                     summary="enrol a face of a photo under a subject (made if new)")
def add_face(request: Request, gallery: str, subject: str, file: Image,
             face: Annotated[str, Query(description="'largest' (default) or the face number "
                                        "/v1/analyze gives it")] = "largest"
             ) -> dict[str, Any]:
    from facefuse.gallery.enrol import parse_face_choice
    from facefuse.gallery.records import check_name

    try:
        choice = parse_face_choice(face)
    except ValueError as exc:
        raise ServiceError(400, "bad_request", f"face: {exc}") from None
    check_name(subject)
    g = _gallery(request, gallery)
    (result,) = _run(_service(request), [file])
    try:
        chosen = choose_face(result, choice)
    except ValueError as exc:
        raise ServiceError(400, "no_face", str(exc)) from None
    image = None
    if g.keeps_images:  # the upload as sent, read again from its spooled file
        file.file.seek(0)
        image = file.file.read()
    face_id = g.add(subject, chosen.predictions["embedding"], result.source, chosen.box, image)
    return {"face_id": face_id, "subject": subject, "source": result.source,
            "face": chosen.index, "box": _box(chosen)}


@gallery_router.get("/{gallery}/subjects", summary="the subjects and their numbers of faces")
def list_subjects(request: Request, gallery: str) -> dict[str, Any]:
    return {"subjects": [s.to_dict() for s in _gallery(request, gallery).subjects()]}


@gallery_router.get("/{gallery}/subjects/{subject}/faces", summary="a subject's faces")
def list_faces(request: Request, gallery: str, subject: str) -> dict[str, Any]:
    return {"faces": [f.to_dict() for f in _gallery(request, gallery).faces(subject)]}


@gallery_router.delete("/{gallery}/subjects/{subject}",
                       summary="remove a subject and all their faces")
def delete_subject(request: Request, gallery: str, subject: str) -> dict[str, Any]:
    removed = _gallery(request, gallery).remove_subject(subject)
    return {"deleted": "subject", "subject": subject, "faces": removed}


@gallery_router.delete("/{gallery}/faces/{face_id}", summary="remove one face")
def delete_face(request: Request, gallery: str, face_id: int) -> dict[str, Any]:
    _gallery(request, gallery).remove_face(face_id)
    return {"deleted": "face", "face_id": face_id}


@gallery_router.post("/{gallery}/search",
                     summary="the nearest subjects of every face of a photo")
def search(request: Request, gallery: str, file: Image,
           limit: Annotated[int, Query(ge=1, le=100, description="subjects per face")] = 1
           ) -> dict[str, Any]:
    """Per face, the ``limit`` best subjects (a subject's score is their best cosine), each
    with ``match`` (score at or above the gallery's threshold); ``match`` of the face is the
    best subject when they match, else null. An empty gallery gives empty lists."""
    g = _gallery(request, gallery)
    (result,) = _run(_service(request), [file])
    faces = []
    if result.faces:
        try:
            found = g.search(np.stack([f.predictions["embedding"] for f in result.faces]),
                             limit)
        except EmptyGallery:
            found = [[] for _ in result.faces]
        for face, hits in zip(result.faces, found, strict=True):
            faces.append({"face": face.index, "box": _box(face),
                          "match": hits[0].subject if hits and hits[0].match else None,
                          "top": [h.to_dict() for h in hits]})
    return {"source": result.source, "threshold": round(g.threshold, 4), "faces": faces}
