"""A persistent face gallery: subjects and their face embeddings in a folder (SQLite, the
source of truth, and an exact faiss index rebuilt from it when needed), searched by cosine.

``FaceGallery`` needs the gallery extra (``pip install 'facefuse[gallery]'``); faiss is
imported when a gallery is first opened, not here. ``docs/GALLERY.md`` has the format, the
durability guarantees and the measured speed.
"""

from facefuse.gallery.records import (
    EmptyGallery,
    Face,
    FingerprintMismatch,
    GalleryBusy,
    GalleryError,
    GalleryInfo,
    Hit,
    Subject,
    UnknownFace,
    UnknownSubject,
)
from facefuse.gallery.store import FaceGallery

__all__ = ["EmptyGallery", "Face", "FaceGallery", "FingerprintMismatch", "GalleryBusy",
           "GalleryError", "GalleryInfo", "Hit", "Subject", "UnknownFace", "UnknownSubject"]
