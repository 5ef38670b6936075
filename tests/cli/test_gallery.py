"""``facefuse gallery ...`` on real LFW photos (read from the shared data, never copied into
the repository), the embeddings' fingerprint, and the command without faiss installed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from facefuse.cli.main import build_parser, main

pytest.importorskip("faiss")

BUSH, POWELL = "George_W_Bush", "Colin_Powell"


def photo(shared_data: Path, name: str, n: int) -> str:
    return str(shared_data / "lfw" / "lfw" / name / f"{name}_{n:04d}.jpg")


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def gallery(tmp_path: Path, shared_data: Path, capsys) -> Path:
    """A gallery of two people, two photos each, made through the command line."""
    folder = tmp_path / "people.gallery"
    assert main(["gallery", "create", str(folder)]) == 0
    for name in (BUSH, POWELL):
        assert main(["gallery", "add", str(folder), name, photo(shared_data, name, 1),
                     photo(shared_data, name, 2)]) == 0
    capsys.readouterr()
    return folder


def test_create_add_list_search_remove(tmp_path: Path, shared_data: Path, capsys) -> None:
    folder = tmp_path / "g"
    assert main(["gallery", "create", str(folder)]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["dim"] == 256 and made["faces"] == 0
    assert made["fingerprint"].startswith("identity:dlib_resnet+sface:")
    assert made["threshold"] == pytest.approx(0.813463)
    assert main(["gallery", "add", str(folder), BUSH, photo(shared_data, BUSH, 1),
                 photo(shared_data, BUSH, 2)]) == 0
    out, err = capsys.readouterr()
    added = lines(out)
    assert [a["face_id"] for a in added] == [1, 2] and {a["subject"] for a in added} == {BUSH}
    assert "2/2" in err and "2 face(s) added" in err  # the progress bar and the summary
    assert main(["gallery", "add", str(folder), POWELL, photo(shared_data, POWELL, 1),
                 photo(shared_data, POWELL, 2), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["gallery", "list", str(folder), "--json"]) == 0
    assert [(s["name"], s["faces"]) for s in lines(capsys.readouterr().out)] == \
        [(POWELL, 2), (BUSH, 2)]
    assert main(["gallery", "list", str(folder)]) == 0
    table = capsys.readouterr().out
    assert "2 subject(s), 4 face(s)" in table and BUSH in table
    queries = [photo(shared_data, BUSH, 10), photo(shared_data, POWELL, 10)]
    assert main(["gallery", "search", str(folder), *queries, "--top", "2", "--quiet"]) == 0
    answers = lines(capsys.readouterr().out)
    assert [a["query"] for a in answers] == queries
    for answer, name in zip(answers, (BUSH, POWELL), strict=True):
        assert answer["match"] == name and answer["top"][0]["subject"] == name
        assert [t["subject"] for t in answer["top"]] == [name, ({BUSH, POWELL} - {name}).pop()]
        assert answer["top"][0]["score"] > answer["top"][1]["score"]
        assert [t["match"] for t in answer["top"]] == \
            [t["score"] >= made["threshold"] for t in answer["top"]]
    assert main(["gallery", "remove", str(folder), "--face", "1"]) == 0
    assert lines(capsys.readouterr().out) == [{"removed": "face", "face_id": 1}]
    assert main(["gallery", "list", str(folder), "--subject", BUSH, "--json"]) == 0
    assert [f["id"] for f in lines(capsys.readouterr().out)] == [2]
    assert main(["gallery", "remove", str(folder), "--subject", BUSH]) == 0
    assert lines(capsys.readouterr().out) == [{"removed": "subject", "subject": BUSH,
                                               "faces": 1}]
    assert main(["gallery", "search", str(folder), queries[0], "--quiet"]) == 0
    assert lines(capsys.readouterr().out)[0]["top"][0]["subject"] == POWELL


def test_add_from_a_folder_of_people(tmp_path: Path, shared_data: Path, capsys) -> None:
    people = tmp_path / "people"
    for name in (BUSH, POWELL):
        (people / name).mkdir(parents=True)
        for n in (3, 4):  # links to the shared photos, not copies
            (people / name / f"{n}.jpg").symlink_to(photo(shared_data, name, n))
    folder = tmp_path / "g"
    assert main(["gallery", "create", str(folder)]) == 0
    capsys.readouterr()
    assert main(["gallery", "add", str(folder), "--from-folder", str(people), "--quiet"]) == 0
    added = lines(capsys.readouterr().out)
    assert sorted(a["subject"] for a in added) == [POWELL, POWELL, BUSH, BUSH]
    assert main(["gallery", "add", str(folder), BUSH, photo(shared_data, BUSH, 5),
                 "--from-folder", str(people)]) == 2
    assert "not both" in capsys.readouterr().err


def test_faces_that_cannot_be_enrolled_are_reported(gallery: Path, tmp_path: Path,
                                                    shared_data: Path, capsys) -> None:
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((300, 300, 3), np.uint8)).save(blank)
    assert main(["gallery", "add", str(gallery), "Nobody", str(blank),
                 photo(shared_data, BUSH, 3), "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert len(lines(out)) == 1
    assert f"{blank}: no face found" in err and err.count("\n") == 1
    assert main(["gallery", "add", str(gallery), BUSH, photo(shared_data, BUSH, 4),
                 "--face", "3", "--quiet"]) == 1
    assert "no face 3 (its faces are numbered 0 to 0); not added" in capsys.readouterr().err
    assert main(["gallery", "search", str(gallery), str(blank), "--quiet"]) == 0
    assert lines(capsys.readouterr().out)[0]["match"] is None


@pytest.mark.parametrize("argv, message", [
    (["remove", "{g}", "--face", "99"], "no face 99 in the gallery"),
    (["remove", "{g}", "--subject", "Nobody"], "no subject 'Nobody' in the gallery"),
    (["list", "{g}/missing"], "no gallery in"),
    (["create", "{g}"], "already holds a gallery"),
    (["add", "{g}", "a/b", "{photo}"], "invalid subject name 'a/b'"),
    (["add", "{g}", BUSH], "give SUBJECT and one or more photos"),
    (["add", "{g}", BUSH, "{photo}", "--identity", "none"], "holds embeddings of identity:"),
    (["search", "{g}", "{photo}", "--identity", "none"], "not of model:facefuse-mtl-small:"),
    (["reembed", "{g}"], "did not keep its photos (made without --keep-images)"),
    (["reembed", "{g}/missing"], "no gallery in"),
])
def test_errors_are_one_line_and_exit_2(gallery: Path, shared_data: Path, capsys, argv,
                                        message: str) -> None:
    args = [a.format(g=gallery, photo=photo(shared_data, BUSH, 6)) for a in argv]
    assert main(["gallery", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("facefuse: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("value, message", [
    ("-1", "expected 'largest' or a face number (0 or more), got '-1'"),
    ("big", "expected 'largest' or a face number (0 or more), got 'big'"),
    ("1.5", "expected 'largest' or a face number (0 or more), got '1.5'")])
def test_a_bad_face_choice_is_a_usage_error(value: str, message: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["gallery", "add", "g", "Ada", "a.jpg", "--face", value])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_an_empty_gallery_cannot_be_searched(tmp_path: Path, shared_data: Path,
                                             capsys) -> None:
    assert main(["gallery", "create", str(tmp_path / "g")]) == 0
    assert main(["gallery", "search", str(tmp_path / "g"), photo(shared_data, BUSH, 1)]) == 2
    assert "has no face to search" in capsys.readouterr().err


def test_a_gallery_of_the_models_own_embedding(tmp_path: Path, shared_data: Path,
                                               capsys) -> None:
    folder, own = tmp_path / "own", ["--identity", "none"]
    assert main(["gallery", "create", str(folder), *own, "--threshold", "0.5"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["fingerprint"].startswith("model:facefuse-mtl-small:")
    assert (made["dim"], made["threshold"]) == (128, 0.5)
    assert main(["gallery", "add", str(folder), BUSH, photo(shared_data, BUSH, 1), *own]) == 0
    assert main(["gallery", "add", str(folder), BUSH, photo(shared_data, BUSH, 1)]) == 2
    assert "holds embeddings of model:facefuse-mtl-small:" in capsys.readouterr().err


def test_the_fingerprint_follows_the_fusion_and_the_networks(tmp_path: Path) -> None:
    from facefuse.gallery.embedding_space import identity_fingerprint
    from facefuse.inference.identity import FusedIdentity
    from facefuse.weights import SHIPPED_IDENTITY

    shipped = identity_fingerprint(FusedIdentity.read(SHIPPED_IDENTITY))

    def variant(name: str, change) -> str:
        folder = tmp_path / name
        folder.mkdir()
        for f in SHIPPED_IDENTITY.parent.glob("*"):
            (folder / f.name).symlink_to(f)
        change(folder)
        return identity_fingerprint(FusedIdentity.read(folder / SHIPPED_IDENTITY.name))

    def reweigh(folder: Path) -> None:
        doc = json.loads(SHIPPED_IDENTITY.read_text())
        doc["parts"][1]["weight"] *= 1.5
        (folder / SHIPPED_IDENTITY.name).unlink()
        (folder / SHIPPED_IDENTITY.name).write_text(json.dumps(doc))

    def other_graph(folder: Path) -> None:
        (folder / "sface.onnx").unlink()
        (folder / "sface.onnx").write_bytes(b"other weights")

    assert variant("same", lambda folder: None) == shipped
    assert shipped.startswith("identity:dlib_resnet+sface:")
    assert len({shipped, variant("reweighed", reweigh), variant("graph", other_graph)}) == 3


def test_a_gallery_that_keeps_its_photos_is_reembedded_for_other_weights(
        tmp_path: Path, shared_data: Path, capsys) -> None:
    folder, own = tmp_path / "kept", ["--identity", "none"]
    assert main(["gallery", "create", str(folder), "--keep-images", *own]) == 0
    assert json.loads(capsys.readouterr().out)["keeps_images"] is True
    for name in (BUSH, POWELL):
        assert main(["gallery", "add", str(folder), name, photo(shared_data, name, 1), *own,
                     "--quiet"]) == 0
    query = photo(shared_data, POWELL, 2)
    assert main(["gallery", "search", str(folder), query]) == 2
    assert "re-embed it with these weights (`facefuse gallery reembed" in \
        capsys.readouterr().err
    assert main(["gallery", "reembed", str(folder)]) == 0
    out, err = capsys.readouterr()
    done = json.loads(out)
    assert done["faces"] == 2 and done["dim"] == {"old": 128, "new": 256}
    assert done["fingerprint"]["old"].startswith("model:facefuse-mtl-small:")
    assert done["fingerprint"]["new"].startswith("identity:dlib_resnet+sface:")
    assert done["threshold"] == pytest.approx(0.813463)
    assert "2/2" in err  # the progress bar
    assert main(["gallery", "search", str(folder), query, "--quiet"]) == 0
    assert lines(capsys.readouterr().out)[0]["match"] == POWELL
    assert main(["gallery", "list", str(folder), "--faces", "--json"]) == 0
    assert [f["subject"] for f in lines(capsys.readouterr().out)] == [BUSH, POWELL]
    assert main(["gallery", "list", str(folder)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "256-d embeddings of identity:dlib_resnet+sface:" in header
    assert header.endswith("; keeps its photos")


@pytest.mark.parametrize("command", ["create", "add", "remove", "list", "search",
                                     "reembed"])
def test_help_has_examples(command: str, capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["gallery", command, "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and f"facefuse gallery {command}" in text
    if command in ("create", "add", "search"):
        assert "--device" in text and "--identity" in text
    if command in ("add", "search"):
        assert "--quiet" in text


WITHOUT_FAISS = textwrap.dedent("""
    import importlib.abc, json, sys

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "faiss":
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)

    sys.meta_path.insert(0, Blocker())
    from facefuse.cli import main
    import facefuse.gallery
    codes = [main(["gallery", "list", sys.argv[1]]), main(["gallery", "create", sys.argv[1]])]
    print(json.dumps({"codes": codes, "faiss": "faiss" in sys.modules}))
""")


def test_without_faiss_a_gallery_command_names_the_extra(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_FAISS, str(tmp_path / "g")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"codes": [2, 2], "faiss": False}
    assert done.stderr.splitlines() == [
        "facefuse: facefuse gallery list needs the gallery extra (faiss is not installed): "
        "pip install 'facefuse[gallery]'",
        "facefuse: facefuse gallery create needs the gallery extra (faiss is not installed): "
        "pip install 'facefuse[gallery]'"]
    assert not (tmp_path / "g").exists()


def test_the_index_is_not_loaded_to_list(gallery: Path, capsys) -> None:
    (gallery / "index.faiss").write_bytes(b"broken")
    assert main(["gallery", "list", str(gallery), "--json"]) == 0
    assert len(lines(capsys.readouterr().out)) == 2
    assert (gallery / "index.faiss").read_bytes() == b"broken"  # read-only: left as it is
