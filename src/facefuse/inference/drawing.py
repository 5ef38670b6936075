"""An analyzed photo drawn: boxes, landmarks and each face's main labels, sized to the face
and kept inside the image (``facefuse analyze --annotate`` and the service's annotated
image)."""

from __future__ import annotations

import numpy as np


def label_font_size(box: tuple[float, float, float, float]) -> int:
    """Text height for a face's label: a fifth of its box's width, at least 10 px."""
    return max(10, int(round((box[2] - box[0]) / 5)))


def label_position(text_size: tuple[int, int], box: tuple[float, float, float, float],
                   image_size: tuple[int, int]) -> tuple[int, int]:
    """Where a label of ``text_size`` (w, h) goes: just above the face's box, or below it
    when there is no room above, moved left or right to stay inside the image."""
    (tw, th), (w, h) = text_size, image_size
    x = min(max(0, int(box[0])), max(0, w - tw))
    y = int(box[1]) - th - 2
    if y < 0:
        y = min(int(box[3]) + 2, max(0, h - th))
    return x, y


def draw_faces(rgb: np.ndarray, result):
    """``rgb`` as a PIL image with boxes, landmarks and the main labels drawn, each label
    sized to its face and kept inside the image on a dark backing."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    for face in result.faces:
        side = face.box[2] - face.box[0]
        draw.rectangle(face.box, outline=(0, 255, 0), width=max(1, int(side / 60)))
        if face.landmarks:
            r = max(1.0, side / 120)
            for x, y in face.landmarks:
                draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 0, 0))
        p = face.predictions
        parts = [f"{p['age']:.0f}y" if "age" in p else "",
                 *(p[t]["label"] for t in ("gender", "race", "emotion") if t in p)]
        text = " ".join(x for x in parts if x)
        if not text:
            continue
        font = ImageFont.load_default(size=label_font_size(face.box))
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x, y = label_position((right - left, bottom - top), face.box, im.size)
        draw.rectangle((x, y, x + right - left, y + bottom - top), fill=(0, 0, 0))
        draw.text((x - left, y - top), text, fill=(255, 255, 0), font=font)
    return im
