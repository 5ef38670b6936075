"""Every bad-input rule: a clear reason naming the file; one bad file never ends a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from facefuse.data.images import ImageError, check_image_file, load_rgb
from facefuse.data.readers import DatasetError, read_dataset
from tests.fakes import (
    face_points,
    pts_text,
    truncate,
    write_celeba,
    write_fer2013,
    write_image,
    write_lfw,
    write_utkface,
)


def reasons(result) -> dict[str, str]:
    return {Path(s.path).name: s.reason for s in result.skipped}


def test_malformed_utkface_names_are_skipped_with_reason(tmp_path: Path) -> None:
    folder = write_utkface(tmp_path, n=10)
    write_image(folder / "61_1_20170109142408075.jpg.chip.jpg")
    write_image(folder / "55_0_0_20170116232725357jpg.chip.jpg")
    write_image(folder / "x_0_0_20170116232725357.jpg.chip.jpg")
    r = read_dataset("utkface", tmp_path)
    why = reasons(r)
    assert len(r.table) == 10
    assert "3 underscore-separated fields" in why["61_1_20170109142408075.jpg.chip.jpg"]
    assert "malformed" in why["55_0_0_20170116232725357jpg.chip.jpg"]
    assert "non-numeric" in why["x_0_0_20170116232725357.jpg.chip.jpg"]


@pytest.mark.parametrize("name,expected", [
    ("130_0_0_20170101000000000.jpg.chip.jpg", "age 130 out of range"),
    ("30_2_0_20170101000000000.jpg.chip.jpg", "gender 2 out of range"),
    ("30_0_7_20170101000000000.jpg.chip.jpg", "race 7 out of range"),
])
def test_utkface_label_out_of_range(tmp_path: Path, name: str, expected: str) -> None:
    folder = write_utkface(tmp_path, n=3)
    write_image(folder / name)
    r = read_dataset("utkface", tmp_path)
    assert expected in reasons(r)[name]
    assert len(r.table) == 3


def test_truncated_zero_byte_and_non_image_files(tmp_path: Path) -> None:
    folder = write_fer2013(tmp_path, per_class=3) / "train" / "happy"
    truncate(write_image(folder / "cut.jpg", (48, 48), seed=99))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("hello")
    (folder / "fake.jpg").write_text("this is not a jpeg")
    r = read_dataset("fer2013", tmp_path)
    why = reasons(r)
    assert "truncated JPEG" in why["cut.jpg"]
    assert why["empty.jpg"] == "zero-byte file"
    assert "not an image file" in why["notes.txt"]
    assert "not an image" in why["fake.jpg"]
    assert len(r.table) == 7 * 9
    assert all(str(folder) in s.path for s in r.skipped)


def test_truncated_png_and_jpeg_fail_to_decode_with_file_name(tmp_path: Path) -> None:
    png = truncate(write_image(tmp_path / "a.png", (64, 64)))
    assert "truncated PNG" in check_image_file(png)
    with pytest.raises(ImageError, match="a.png: corrupt or truncated"):
        load_rgb(png)
    jpg = truncate(write_image(tmp_path / "b.jpg", (64, 64)), keep=0.3)
    with pytest.raises(ImageError, match="b.jpg: corrupt or truncated"):
        load_rgb(jpg)
    with pytest.raises(ImageError, match="c.jpg: file does not exist"):
        load_rgb(tmp_path / "c.jpg")


def test_unknown_emotion_folder_is_a_label_out_of_range(tmp_path: Path) -> None:
    root = write_fer2013(tmp_path, per_class=2)
    write_image(root / "train" / "bored" / "x.jpg", (48, 48), mode="L")
    r = read_dataset("fer2013", tmp_path)
    assert "unknown emotion folder 'bored'" in reasons(r)["x.jpg"]


def test_empty_folder_is_a_dataset_error(tmp_path: Path) -> None:
    (tmp_path / "utkface" / "UTKFace").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no readable UTKFace images"):
        read_dataset("utkface", tmp_path)
    (tmp_path / "fer2013" / "train" / "happy").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no readable images"):
        read_dataset("fer2013", tmp_path / "fer2013")


def test_missing_dataset_root_names_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset("lfw", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="no LFW"):
        read_dataset("lfw", tmp_path)
    with pytest.raises(KeyError, match="valid names: 300w, celeba"):
        read_dataset("imagenet", tmp_path)


def test_celeba_missing_and_malformed_label_files(tmp_path: Path) -> None:
    folder = write_celeba(tmp_path, identities=4, per_identity=2)
    attr = folder / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    lines[2] = lines[2].rsplit(" ", 1)[0]  # 39 values
    lines[3] = lines[3][:-2] + " 2"  # value out of range
    attr.write_text("\n".join(lines) + "\n")
    ident = folder / "identity_CelebA.txt"
    ident.write_text(ident.read_text() + "999999.jpg 5\nbroken line here\n")
    r = read_dataset("celeba", tmp_path)
    text = "\n".join(f"{s.path}: {s.reason}" for s in r.skipped)
    assert "list_attr_celeba.txt:3" in text and "39 attribute values" in text
    assert "list_attr_celeba.txt:4" in text and "out of range" in text
    assert "999999.jpg: listed in identity_CelebA.txt but the image file is missing" in text
    assert "identity_CelebA.txt:" in text and "expected '<image> <value>'" in text
    # rows with a bad attribute line keep their identity (not dropped silently)
    assert len(r.table) == 8
    assert any("only one of identity / attributes" in n for n in r.notes)

    attr.write_text("8\nnot the header\n")
    with pytest.raises(DatasetError, match="header is not the 40 CelebA attribute names"):
        read_dataset("celeba", tmp_path)
    attr.unlink()
    ident.unlink()
    with pytest.raises(DatasetError, match="no labels"):
        read_dataset("celeba", folder)


def test_celeba_partition_value_out_of_range(tmp_path: Path) -> None:
    folder = write_celeba(tmp_path, identities=4, per_identity=2)
    part = folder / "list_eval_partition.txt"
    part.write_text(part.read_text().replace("000001.jpg 0", "000001.jpg 7"))
    r = read_dataset("celeba", tmp_path)
    assert any("partition '7' out of range" in s.reason for s in r.skipped)


def test_lfw_pairs_problems(tmp_path: Path) -> None:
    folder = write_lfw(tmp_path)
    pairs = folder / "pairs.txt"
    pairs.write_text(pairs.read_text() + "Person_A\tone\t2\nGhost\t1\t2\n")
    r = read_dataset("lfw", tmp_path)
    text = "\n".join(f"{s.path}: {s.reason}" for s in r.skipped)
    assert "pairs.txt:10: malformed pair line" in text
    assert "pairs.txt:11: pair names a missing image" in text
    pairs.write_text("garbage\n")
    with pytest.raises(DatasetError, match="line 1"):
        read_dataset("lfw", tmp_path)
    pairs.unlink()
    r = read_dataset("lfw", folder)
    assert any("pairs.txt" in n and "missing" in n for n in r.notes)
    assert "test" not in set(r.table.split)


def test_lfw_file_outside_naming_scheme(tmp_path: Path) -> None:
    folder = write_lfw(tmp_path)
    write_image(folder / "lfw" / "Person_A" / "holiday.jpg")
    r = read_dataset("lfw", tmp_path)
    assert "does not follow Person_A_NNNN.jpg" in reasons(r)["holiday.jpg"]


def test_300w_malformed_pts(tmp_path: Path) -> None:
    folder = tmp_path / "300w" / "afw"
    for i in range(5):
        write_image(folder / f"{i}.jpg", (64, 64), seed=i)
    (folder / "0.pts").write_text(pts_text(face_points()))
    (folder / "1.pts").write_text(pts_text(face_points()[:60]))
    (folder / "2.pts").write_text(pts_text(face_points()).replace("{", ""))
    (folder / "3.pts").write_text(pts_text(face_points()).replace(".", ",", 1))
    (folder / "orphan.pts").write_text(pts_text(face_points()))
    r = read_dataset("300w", tmp_path)
    why = reasons(r)
    assert len(r.table) == 1
    assert "n_points is 60, expected 68" in why["1.pts"]
    assert "missing '{' or '}'" in why["2.pts"]
    assert "non-numeric coordinate" in why["3.pts"] or "exactly two numbers" in why["3.pts"]
    assert "no landmark file 4.pts" in why["4.jpg"]
    assert "without an image" in why["orphan.pts"]


def test_manifest_bad_rows(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    write_image(root / "a.jpg")
    write_image(root / "b.jpg", seed=1)
    write_image(tmp_path / "outside.jpg")
    (root / "m.csv").write_text(
        "image,gender,age,Smiling,split\n"
        "a.jpg,0,30,1,train\n"
        "../outside.jpg,0,30,,\n"
        "b.jpg,5,,,\n"
        "b.jpg,,200,,\n"
        "b.jpg,,,yes,\n"
        "b.jpg,1,,,holdout\n"
        "missing.jpg,1,,,\n"
        ",1,,,\n"
        "b.jpg,,,,\n")
    r = read_dataset("manifest", root / "m.csv")
    text = "\n".join(f"{s.path}: {s.reason}" for s in r.skipped)
    assert "m.csv:3: image path '../outside.jpg' escapes the manifest's root" in text
    assert "m.csv:4: column 'gender': gender 5 out of range 0-1" in text
    assert "m.csv:5: column 'age': age 200.0 out of range" in text
    assert "m.csv:6: column 'Smiling': 'yes' is not 1, 0 or -1" in text
    assert "m.csv:7: column 'split': 'holdout'" in text
    assert "missing.jpg: file does not exist" in text
    assert "m.csv:9: empty 'image' cell" in text
    assert "m.csv:10: no label in any known column" in text
    assert len(r.table) == 1
    (root / "nohead.csv").write_text("path,age\na.jpg,3\n")
    with pytest.raises(DatasetError, match="no 'image' column"):
        read_dataset("manifest", root / "nohead.csv")
