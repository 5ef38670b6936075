"""What a user sees at the edges of a run: Ctrl-C mid-run, labels on annotated images of any
size, and help that shows valid values and an example."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from facefuse.assets import demo_image_path
from facefuse.cli.main import build_parser, main
from facefuse.inference.analyzer import FaceAnalyzer
from facefuse.inference.drawing import label_font_size, label_position

FAST = ["--identity", "none", "--landmark-refiner", "none", "--no-flip", "--quiet"]


@pytest.fixture
def interrupt_after_two(monkeypatch) -> None:
    """The analyzer's results stop with a KeyboardInterrupt after two, as Ctrl-C would."""
    real = FaceAnalyzer.iter_analyze

    def two_then_ctrl_c(self, *args, **kwargs):
        for i, result in enumerate(real(self, *args, **kwargs)):
            if i == 2:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(FaceAnalyzer, "iter_analyze", two_then_ctrl_c)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_ctrl_c_says_what_was_written_and_leaves_a_valid_file(fmt, interrupt_after_two,
                                                              tmp_path: Path, capsys) -> None:
    out = tmp_path / f"faces.{fmt}"
    photos = [str(demo_image_path())] * 4
    assert main(["analyze", *photos, "--out", str(out), "--format", fmt,
                 "--batch-images", "1", *FAST]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"facefuse: interrupted; 2 photo results written to {out}"]
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2


def test_ctrl_c_before_anything_is_written(interrupt_after_two, monkeypatch, capsys) -> None:
    def at_once(self, *args, **kwargs):
        raise KeyboardInterrupt
        yield  # a generator, as the real one

    monkeypatch.setattr(FaceAnalyzer, "iter_analyze", at_once)
    assert main(["embed", str(demo_image_path()), "--identity", "none", "--quiet"]) == 130
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == \
        "facefuse: interrupted; 0 embeddings written to standard output"


@pytest.mark.parametrize("image_size", [(64, 48), (640, 480), (4000, 3000)])
def test_labels_scale_with_the_face_and_stay_inside_the_image(image_size) -> None:
    w, h = image_size
    for box in ((0.0, 0.0, w / 3, h / 3),  # top-left corner: no room above
                (w * 0.7, h * 0.6, w * 1.0, h * 0.95),  # bottom right
                (-10.0, -10.0, w + 10.0, h + 10.0)):  # larger than the image
        size = label_font_size(box)
        assert size >= 10 and size == pytest.approx(max(10, (box[2] - box[0]) / 5), abs=1)
        text = (int(size * 6), size)  # about a dozen characters
        x, y = label_position(text, box, image_size)
        assert 0 <= x and 0 <= y
        if text[0] <= w:
            assert x + text[0] <= w
        if text[1] <= h:
            assert y + text[1] <= h
    # room above: the label sits right on top of the box
    assert label_position((30, 10), (100, 100, 200, 200), (640, 480)) == (100, 88)


def test_annotate_writes_a_labelled_image(tmp_path: Path) -> None:
    assert main(["analyze", str(demo_image_path()), "--annotate", str(tmp_path), *FAST]) == 0
    from PIL import Image

    drawn = np.asarray(Image.open(tmp_path / "astronaut.png"))
    yellow = (drawn[..., 0] > 200) & (drawn[..., 1] > 200) & (drawn[..., 2] < 60)
    assert yellow.sum() > 50  # the label's text


@pytest.mark.parametrize("command", [["analyze"], ["verify"], ["embed"], ["search"],
                                     ["video", "analyze"], ["video", "predict"]])
def test_help_lists_tasks_and_options_of_every_analyzing_command(command, capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    text = capsys.readouterr().out
    for option in ("--device", "--model", "--detector", "--backend"):
        assert option in text, option
    assert command == ["verify"] or "--quiet" in text  # verify prints one line, no progress
    assert "example" in text.lower()
    if command[0] in ("analyze", "video"):
        assert "age, gender, race" in text  # valid task names


def test_an_unknown_task_is_a_usage_error_naming_the_valid_ones(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["analyze", "--tasks", "age,mood"])
    assert stop.value.code == 2
    assert "unknown task 'mood'; valid: identity, age" in capsys.readouterr().err
