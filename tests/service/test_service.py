"""``facefuse serve``: the REST service through FastAPI's TestClient on real LFW photos (read
in place from the shared data, never copied into the repository), its bad requests, eight
concurrent clients, a gallery enrolled and searched, metrics, the API key, the model
thread's micro-batching on its own, and the real server started by the command line."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("faiss")

from fastapi.testclient import TestClient  # noqa: E402

from facefuse.cli import main  # noqa: E402
from facefuse.service.batcher import MicroBatcher  # noqa: E402
from tests.service.server import BLAIR, BUSH, POWELL, Server, photo  # noqa: E402


def upload(path: Path, field: str = "files") -> tuple[str, tuple[str, bytes, str]]:
    return field, (path.name, path.read_bytes(), "image/jpeg")


@pytest.fixture(scope="module")
def analyzer():
    """One analyzer for every app of this module (used by one app's model thread at a
    time: the apps' requests never overlap)."""
    from facefuse.inference.analyzer import FaceAnalyzer

    return FaceAnalyzer()


def make_client(analyzer, **settings) -> TestClient:
    from facefuse.service.app import create_app
    from facefuse.service.core import Service, ServiceSettings

    return TestClient(create_app(Service(analyzer, ServiceSettings(**settings))))


@pytest.fixture(scope="module")
def client(analyzer, tmp_path_factory):
    with make_client(analyzer, gallery_root=tmp_path_factory.mktemp("galleries")) as c:
        yield c


def error_of(response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error", "code"} and body["error"], body
    return response.status_code, body["code"]


# -- analyze and verify ----------------------------------------------------------------------
def test_analyze_gives_the_json_of_facefuse_analyze(client, shared_data: Path,
                                                    capsys) -> None:
    path = photo(shared_data, BUSH)
    response = client.post("/v1/analyze", files=[upload(path)])
    assert response.status_code == 200, response.text
    (served,) = response.json()["results"]
    assert main(["analyze", "--quiet", str(path)]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert served["source"] == path.name and cli["source"] == str(path)
    assert len(served["faces"]) == len(cli["faces"]) == 1
    a, b = served["faces"][0], cli["faces"][0]
    assert a.keys() == b.keys() and {"age", "gender", "embedding", "landmarks"} <= a.keys()
    assert a["box"] == b["box"] and a["gender"]["label"] == b["gender"]["label"]
    assert a["age"] == pytest.approx(b["age"], abs=1e-3)
    assert np.asarray(a["embedding"]) @ np.asarray(b["embedding"]) > 0.999


def test_analyze_several_photos_tasks_and_annotation(client, shared_data: Path) -> None:
    from PIL import Image

    paths = [photo(shared_data, BUSH), photo(shared_data, POWELL)]
    response = client.post("/v1/analyze", params={"tasks": "age,gender", "annotate": "true"},
                           files=[upload(p) for p in paths])
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["source"] for r in results] == [p.name for p in paths]
    for r in results:
        face = r["faces"][0]
        assert set(face) == {"face", "box", "score", "found_by", "landmarks", "age", "gender"}
        image = Image.open(io.BytesIO(base64.b64decode(r["annotated_png"])))
        assert image.format == "PNG" and image.size == (r["width"], r["height"])


def test_verify_tells_the_same_person_from_another(client, shared_data: Path) -> None:
    same = client.post("/v1/verify", files=[upload(photo(shared_data, BUSH, 1), "a"),
                                            upload(photo(shared_data, BUSH, 2), "b")]).json()
    other = client.post("/v1/verify", files=[upload(photo(shared_data, BUSH, 1), "a"),
                                             upload(photo(shared_data, POWELL, 1), "b")]).json()
    assert same["same_person"] and not other["same_person"], (same, other)
    assert same["similarity"] > same["threshold"] > other["similarity"]
    assert same["faces_found"] == [1, 1] and same["threshold"] == pytest.approx(0.8135)


# -- bad requests ------------------------------------------------------------------------------
def test_bad_requests_get_json_errors_never_a_500(client, shared_data: Path) -> None:
    jpg = photo(shared_data, BUSH)
    cases = [
        (client.post("/v1/analyze", files=[("files", ("notes.txt", b"hello", "text/plain"))]),
         (415, "not_an_image")),
        (client.post("/v1/analyze", files=[("files", ("empty.jpg", b"", "image/jpeg"))]),
         (400, "bad_image")),
        (client.post("/v1/analyze", files=[("files", ("cut.jpg", jpg.read_bytes()[:500],
                                                      "image/jpeg"))]), (400, "bad_image")),
        (client.post("/v1/analyze", params={"tasks": "age,nonsense"}, files=[upload(jpg)]),
         (400, "unknown_task")),
        (client.post("/v1/analyze"), (400, "bad_request")),
        (client.post("/v1/analyze", files=[upload(jpg)] * 17), (400, "too_many_images")),
        (client.post("/v1/analyze", params={"annotate": "maybe"}, files=[upload(jpg)]),
         (400, "bad_request")),
        (client.post("/v1/verify", files=[upload(jpg, "a")]), (400, "bad_request")),
        (client.get("/v1/galleries/nobody/subjects"), (404, "unknown_gallery")),
        (client.post("/v1/galleries", json={"name": "../escape"}), (400, "bad_request")),
        (client.post("/v1/galleries", json={"name": "g", "threshold": 2}),
         (400, "bad_request")),
        (client.post("/v1/galleries", content=b"not json",
                     headers={"content-type": "application/json"}), (400, "bad_request")),
        (client.get("/v1/nothing-here"), (404, "not_found")),
        (client.put("/v1/analyze"), (405, "method_not_allowed")),
    ]
    for response, expected in cases:
        assert error_of(response) == expected, response.text
    assert "/v1/analyze" in client.get("/openapi.json").json()["paths"]


def test_a_crash_in_the_model_is_a_logged_500_without_a_trace(client, shared_data: Path,
                                                              caplog) -> None:
    batcher = client.app.state.service.batcher
    analyze = batcher._analyze

    def broken(images):
        raise IndexError("a bug deep in the model")

    batcher._analyze = broken
    try:
        response = client.post("/v1/analyze", files=[upload(photo(shared_data, BUSH))])
    finally:
        batcher._analyze = analyze
    assert error_of(response) == (500, "internal")
    assert "IndexError" not in response.text and "a bug deep" in caplog.text
    assert client.post("/v1/analyze", files=[upload(photo(shared_data, BUSH))]
                       ).status_code == 200  # the model thread lives on


# -- concurrency -------------------------------------------------------------------------------
def test_eight_concurrent_clients_all_get_their_own_results(client, shared_data: Path) -> None:
    people = [BUSH, POWELL, BLAIR, BUSH, POWELL, BLAIR, BUSH, POWELL]
    paths = [photo(shared_data, name, 1 + i // 3) for i, name in enumerate(people)]
    alone = {p: client.post("/v1/analyze", files=[upload(p)]).json()["results"][0]
             for p in dict.fromkeys(paths)}
    start = threading.Barrier(len(paths))

    def post(path: Path):
        start.wait()
        return client.post("/v1/analyze", files=[upload(path)])

    with ThreadPoolExecutor(len(paths)) as pool:
        responses = list(pool.map(post, paths))
    assert [r.status_code for r in responses] == [200] * len(paths), \
        [r.text for r in responses if r.status_code != 200]
    for path, response in zip(paths, responses, strict=True):
        (got,) = response.json()["results"]
        want = alone[path]
        assert got["source"] == path.name and len(got["faces"]) == len(want["faces"]) == 1
        assert got["faces"][0]["box"] == want["faces"][0]["box"]
        assert np.asarray(got["faces"][0]["embedding"]) @ np.asarray(
            want["faces"][0]["embedding"]) > 0.999


# -- galleries ---------------------------------------------------------------------------------
def test_gallery_enrol_list_search_and_remove(client, shared_data: Path) -> None:
    made = client.post("/v1/galleries", json={"name": "people"})
    assert made.status_code == 201, made.text
    assert made.json()["faces"] == 0 and made.json()["dim"] == 256
    assert error_of(client.post("/v1/galleries", json={"name": "people"})) == \
        (409, "gallery_exists")
    ids = {}
    for name in (BUSH, POWELL, BLAIR):
        for n in (1, 2):
            r = client.post(f"/v1/galleries/people/subjects/{name}/faces",
                            files=[upload(photo(shared_data, name, n), "file")])
            assert r.status_code == 201, r.text
            ids.setdefault(name, []).append(r.json()["face_id"])
    assert error_of(client.post(f"/v1/galleries/people/subjects/{BUSH}/faces",
                                params={"face": "3"},
                                files=[upload(photo(shared_data, BUSH, 3), "file")])) == \
        (400, "no_face")
    listed = client.get("/v1/galleries").json()["galleries"]
    assert [(g["name"], g["subjects"], g["faces"]) for g in listed] == [("people", 3, 6)]
    faces = client.get(f"/v1/galleries/people/subjects/{POWELL}/faces").json()["faces"]
    assert [f["id"] for f in faces] == ids[POWELL] and faces[0]["source"] == \
        f"{POWELL}_0001.jpg"
    for name in (BUSH, POWELL, BLAIR):  # a held-out photo of each finds them
        r = client.post("/v1/galleries/people/search", params={"limit": 3},
                        files=[upload(photo(shared_data, name, 4), "file")])
        assert r.status_code == 200, r.text
        (face,) = r.json()["faces"]
        assert face["match"] == name and len(face["top"]) == 3, face
        assert face["top"][0]["score"] > face["top"][1]["score"]
    assert client.delete(f"/v1/galleries/people/faces/{ids[BUSH][0]}").status_code == 200
    assert error_of(client.delete(f"/v1/galleries/people/faces/{ids[BUSH][0]}")) == \
        (404, "unknown_face")
    removed = client.delete(f"/v1/galleries/people/subjects/{POWELL}").json()
    assert removed == {"deleted": "subject", "subject": POWELL, "faces": 2}
    assert error_of(client.get(f"/v1/galleries/people/subjects/{POWELL}/faces")) == \
        (404, "unknown_subject")
    assert [(s["name"], s["faces"]) for s in
            client.get("/v1/galleries/people/subjects").json()["subjects"]] == \
        [(BUSH, 1), (BLAIR, 2)]
    assert client.delete("/v1/galleries/people").status_code == 200
    assert error_of(client.get("/v1/galleries/people/subjects")) == (404, "unknown_gallery")
    assert client.get("/v1/galleries").json() == {"galleries": []}


def test_a_search_of_an_empty_gallery_finds_nobody(client, shared_data: Path) -> None:
    assert client.post("/v1/galleries", json={"name": "empty", "threshold": 0.5}
                       ).status_code == 201
    r = client.post("/v1/galleries/empty/search",
                    files=[upload(photo(shared_data, BUSH), "file")]).json()
    assert r["threshold"] == 0.5 and r["faces"][0]["match"] is None \
        and r["faces"][0]["top"] == []
    client.delete("/v1/galleries/empty")


def test_a_gallery_that_keeps_photos_stores_each_upload_as_sent(client,
                                                               shared_data: Path) -> None:
    made = client.post("/v1/galleries", json={"name": "kept", "keep_images": True})
    assert made.status_code == 201 and made.json()["keeps_images"] is True
    sent = photo(shared_data, BLAIR, 2)
    r = client.post(f"/v1/galleries/kept/subjects/{BLAIR}/faces", files=[upload(sent, "file")])
    assert r.status_code == 201, r.text
    gallery = client.app.state.service.galleries.get("kept")
    ((face_id, box, data),) = gallery.source_images([r.json()["face_id"]])
    assert data == sent.read_bytes() and box == tuple(r.json()["box"])
    assert error_of(client.post("/v1/galleries", json={"name": "k2", "keep_images": "maybe"})
                    ) == (400, "bad_request")
    assert client.delete("/v1/galleries/kept").status_code == 200


def test_a_gallery_of_other_embeddings_is_listed_with_its_error(client) -> None:
    from facefuse.gallery import FaceGallery

    root = client.app.state.service.galleries.root
    FaceGallery.create(root / "other", 4, "model:someone-else:0123", 0.5).close()
    try:
        listed = {g["name"]: g for g in client.get("/v1/galleries").json()["galleries"]}
        assert "someone-else" in listed["other"]["error"]
        assert error_of(client.get("/v1/galleries/other/subjects")) == \
            (409, "gallery_unusable")
    finally:
        import shutil

        shutil.rmtree(root / "other")


# -- metrics and health ------------------------------------------------------------------------
def counter(text: str, line_start: str) -> float:
    found = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
             if line.startswith(line_start)]
    return found[0] if found else 0.0


def test_metrics_count_requests_faces_and_errors(client, shared_data: Path) -> None:
    ok = 'facefuse_requests_total{endpoint="/v1/analyze",method="POST",status="200"}'
    bad = 'facefuse_requests_total{endpoint="/v1/analyze",method="POST",status="415"}'
    before = client.get("/metrics").text
    client.post("/v1/analyze", files=[upload(photo(shared_data, BUSH)),
                                      upload(photo(shared_data, POWELL))])
    client.post("/v1/analyze", files=[("files", ("x.txt", b"text", "text/plain"))])
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = response.text
    assert counter(after, ok) == counter(before, ok) + 1
    assert counter(after, bad) == counter(before, bad) + 1
    faces = "facefuse_faces_analyzed_total "
    assert counter(after, faces) == counter(before, faces) + 2
    count = 'facefuse_request_seconds_count{endpoint="/v1/analyze"}'
    assert counter(after, count) == counter(before, count) + 2
    client_errors = 'facefuse_errors_total{endpoint="/v1/analyze",kind="client"}'
    assert counter(after, client_errors) == counter(before, client_errors) + 1
    batched = "facefuse_model_batch_images_sum "
    images = "facefuse_images_analyzed_total "
    assert counter(after, batched) == counter(after, images) > 0  # every image in a batch
    assert client.get("/healthz").json()["status"] == "ok"


def test_api_key_and_upload_limits(analyzer, shared_data: Path) -> None:
    jpg = photo(shared_data, BUSH)
    small = jpg.stat().st_size - 1
    with make_client(analyzer, max_pixels=89 * 90) as c:  # the LFW photos are 90x90
        status, code = error_of(c.post("/v1/analyze", files=[upload(jpg)]))
        assert (status, code) == (413, "too_large")
        assert "90x90" in c.post("/v1/analyze", files=[upload(jpg)]).json()["error"]
    with make_client(analyzer, api_key="s3cret", max_upload_bytes=small) as c:
        assert c.get("/healthz").status_code == 200  # open without the key
        assert "<canvas" in c.get("/").text and c.get("/page.js").headers[
            "content-type"].startswith("text/javascript")  # the page asks for the key
        assert error_of(c.get("/metrics")) == (401, "bad_api_key")
        assert error_of(c.post("/v1/analyze", files=[upload(jpg)],
                               headers={"x-api-key": "wrong"})) == (401, "bad_api_key")
        assert error_of(c.get("/metrics", headers={"x-api-key": "s3cr\xe9t".encode(
            "latin-1")})) == (401, "bad_api_key")  # not ASCII: refused, not a crash
        assert c.get("/metrics", headers={"x-api-key": "s3cret"}).status_code == 200
        assert error_of(c.post("/v1/analyze", files=[upload(jpg)],
                               headers={"x-api-key": "s3cret"})) == (413, "too_large")
        assert error_of(c.get("/v1/galleries", headers={"x-api-key": "s3cret"})) == \
            (404, "no_galleries")


def test_a_stuck_model_gives_503s_while_healthz_still_answers(analyzer,
                                                              shared_data: Path) -> None:
    """More waiting requests than FastAPI's thread pool has threads (40): each times out
    with a 503, and /healthz, on the event loop, answers meanwhile."""
    jpg = photo(shared_data, BUSH)
    stuck = threading.Event()
    with make_client(analyzer, request_timeout_s=3.0) as c:
        batcher = c.app.state.service.batcher
        analyze = batcher._analyze
        batcher._analyze = lambda images: (stuck.wait(30), analyze(images))[1]
        try:
            with ThreadPoolExecutor(44) as pool:
                pending = [pool.submit(c.post, "/v1/analyze", files=[upload(jpg)])
                           for _ in range(44)]
                time.sleep(0.5)
                start = time.perf_counter()
                health = c.get("/healthz")
                assert health.status_code == 200 and time.perf_counter() - start < 0.5
                assert health.json()["queued"] >= 1
                answers = [f.result(60) for f in pending]
        finally:
            stuck.set()
            batcher._analyze = analyze
        assert {error_of(r) for r in answers} == {(503, "timeout")}
        deadline = time.monotonic() + 60  # the batch taken before the jam still runs, alone:
        while counter(c.get("/metrics").text, "facefuse_model_batches_total ") < 1 \
                or batcher.pending():
            assert time.monotonic() < deadline  # the requests that gave up are dropped
            time.sleep(0.05)
        assert c.post("/v1/analyze", files=[upload(jpg)]).status_code == 200


# -- the model thread on its own ---------------------------------------------------------------
def test_the_model_thread_batches_requests_that_wait_together() -> None:
    release, batches = threading.Event(), []

    def analyze(images):
        batches.append(list(images))
        release.wait(10)
        return [f"r{i}" for i in images]

    batcher = MicroBatcher(analyze, window_s=0.05, max_images=8)
    try:
        first = batcher.submit([0])  # the thread takes it and blocks in analyze
        while not batches:
            time.sleep(0.001)
        later = [batcher.submit([i, i + 10]) for i in (1, 2, 3)]  # queue up meanwhile
        release.set()
        assert first.result(10) == ["r0"]
        assert [f.result(10) for f in later] == [["r1", "r11"], ["r2", "r12"], ["r3", "r13"]]
        assert batches == [[0], [1, 11, 2, 12, 3, 13]]  # the three ran as one batch
    finally:
        batcher.close()


def test_a_failing_batch_is_run_again_request_by_request() -> None:
    """One request that breaks the model fails alone, not the requests batched with it."""
    entered, release, batches = threading.Event(), threading.Event(), []

    def analyze(images):
        entered.set()
        release.wait(10)
        batches.append(list(images))
        if 99 in images:
            raise ValueError("this image breaks the model")
        return images

    batcher = MicroBatcher(analyze, window_s=0.05)
    try:
        first = batcher.submit([0])
        assert entered.wait(10)  # the thread holds [0]: the next three queue up together
        later = [batcher.submit([1]), batcher.submit([99]), batcher.submit([2])]
        release.set()
        assert first.result(10) == [0]
        assert later[0].result(10) == [1] and later[2].result(10) == [2]
        with pytest.raises(ValueError, match="breaks the model"):
            later[1].result(10)
        assert batches == [[0], [1, 99, 2], [1], [99], [2]]
    finally:
        batcher.close()


def test_window_zero_runs_each_request_alone_and_errors_reach_every_caller() -> None:
    gate, batches = threading.Event(), []

    def analyze(images):
        gate.wait(10)
        batches.append(len(images))
        if 99 in images:
            raise RuntimeError("model failed")
        return list(images)

    batcher = MicroBatcher(analyze, window_s=0.0)
    try:
        futures = [batcher.submit([i]) for i in range(4)]
        gate.set()
        assert [f.result(10) for f in futures] == [[0], [1], [2], [3]]
        assert batches == [1, 1, 1, 1]
    finally:
        batcher.close()
    gate.clear()
    batcher = MicroBatcher(analyze, window_s=0.0)
    try:  # a request given up on (its future cancelled) while it waits is dropped
        busy = batcher.submit([7])
        given_up = batcher.submit([8])
        assert given_up.cancel()
        gate.set()
        assert busy.result(10) == [7] and batcher.submit([9]).result(10) == [9]
        assert batches[-2:] == [1, 1]  # 7, then 9: 8 never ran
    finally:
        batcher.close()
    batcher = MicroBatcher(analyze, window_s=0.05)
    try:
        with pytest.raises(RuntimeError, match="model failed"):
            batcher.submit([99]).result(10)
        assert batcher.submit([5]).result(10) == [5]  # the thread lives on
    finally:
        batcher.close()
    assert not batcher.alive()


# -- the command line and the real server ------------------------------------------------------
def test_serve_refuses_an_open_address_without_a_key(monkeypatch, capsys) -> None:
    monkeypatch.delenv("FACEFUSE_API_KEY", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "give an API key" in capsys.readouterr().err


@pytest.mark.parametrize("flag, arena", [([], False), (["--cpu-arena"], True)])
def test_serve_sets_the_cpu_arena_before_the_models_load(monkeypatch, flag, arena) -> None:
    from facefuse.cli import serve as cli_serve
    from facefuse.cli.main import build_parser
    from facefuse.runtime import graph

    seen = []

    def stop(*_: object) -> None:
        seen.append(graph.session_options().enable_cpu_mem_arena)
        raise RuntimeError("stopped before loading")

    monkeypatch.setattr(cli_serve, "build_analyzer", stop)
    args = build_parser().parse_args(["serve", *flag])
    args.api_key = None
    try:
        with pytest.raises(RuntimeError, match="stopped"):
            cli_serve.build_service(args)
    finally:
        graph.use_cpu_arena(True)
    assert seen == [arena]


def test_the_real_server_starts_and_analyzes(shared_data: Path, tmp_path: Path) -> None:
    import httpx

    server = Server("--gallery-root", str(tmp_path / "galleries"))
    try:
        path = photo(shared_data, BUSH)
        r = httpx.post(f"{server.url}/v1/analyze", files=[upload(path)], timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["faces"][0]["gender"]["label"] == "male"
        assert httpx.get(f"{server.url}/docs", timeout=5).status_code == 200
        assert re.search(r"facefuse_faces_analyzed_total 1\b",
                         httpx.get(f"{server.url}/metrics", timeout=5).text)
    finally:
        server.stop()


def test_every_endpoint_through_a_real_server(shared_data: Path, tmp_path: Path) -> None:
    import httpx

    server = Server("--gallery-root", str(tmp_path / "galleries"), "--api-key", "k")
    a, b = photo(shared_data, BLAIR, 1), photo(shared_data, BLAIR, 2)
    calls = [
        ("GET", "/healthz", {}, 200), ("GET", "/", {}, 200), ("GET", "/docs", {}, 200),
        ("POST", "/v1/analyze?annotate=true", {"files": [upload(a)]}, 200),
        ("POST", "/v1/verify", {"files": [upload(a, "a"), upload(b, "b")]}, 200),
        ("POST", "/v1/galleries", {"json": {"name": "g"}}, 201),
        ("GET", "/v1/galleries", {}, 200),
        ("POST", f"/v1/galleries/g/subjects/{BLAIR}/faces", {"files": [upload(a, "file")]},
         201),
        ("POST", f"/v1/galleries/g/subjects/{BUSH}/faces",
         {"files": [upload(photo(shared_data, BUSH), "file")]}, 201),
        ("GET", "/v1/galleries/g/subjects", {}, 200),
        ("GET", f"/v1/galleries/g/subjects/{BLAIR}/faces", {}, 200),
        ("POST", "/v1/galleries/g/search?limit=2", {"files": [upload(b, "file")]}, 200),
        ("DELETE", "/v1/galleries/g/faces/1", {}, 200),
        ("DELETE", f"/v1/galleries/g/subjects/{BUSH}", {}, 200),
        ("DELETE", "/v1/galleries/g", {}, 200), ("GET", "/metrics", {}, 200),
    ]
    try:
        with httpx.Client(base_url=server.url, headers={"x-api-key": "k"}, timeout=60) as c:
            answers = [c.request(method, path, **kw) for method, path, kw, _ in calls]
            assert c.get("/v1/galleries", headers={"x-api-key": "no"}).status_code == 401
    finally:
        server.stop()
    assert [r.status_code for r in answers] == [status for *_, status in calls], \
        [r.text[:200] for r in answers]
    assert answers[4].json()["same_person"]
    assert answers[11].json()["faces"][0]["match"] == BLAIR
    assert 'endpoint="/v1/galleries/{gallery}/search",method="POST",status="200"} 1' in \
        answers[-1].text


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_two_worker_processes_serve_concurrent_requests_and_one_gallery(
        shared_data: Path, tmp_path: Path) -> None:
    import httpx

    server = Server("--workers", "2", "--gallery-root", str(tmp_path / "galleries"))
    try:
        paths = [photo(shared_data, name) for name in (BUSH, POWELL, BLAIR, BUSH)]
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda p: httpx.post(
                f"{server.url}/v1/analyze", files=[upload(p)], timeout=60), paths))
        assert [r.status_code for r in responses] == [200] * 4
        assert [r.json()["results"][0]["source"] for r in responses] == \
            [p.name for p in paths]
        workers = [c for c in children(server.process.pid)
                   if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(workers) == 2, workers  # spawned workers, not the resource tracker
        # one gallery, written and read by both workers: enrolments in parallel, each
        # acknowledged one seen by every later read, whichever worker answers it
        with httpx.Client(base_url=server.url, timeout=60) as c:
            assert c.post("/v1/galleries", json={"name": "people"}).status_code == 201
        enrolments = [(name, n) for name in (BUSH, POWELL, BLAIR) for n in (1, 2)]
        with ThreadPoolExecutor(4) as pool:
            added = list(pool.map(lambda e: httpx.post(
                f"{server.url}/v1/galleries/people/subjects/{e[0]}/faces",
                files=[upload(photo(shared_data, *e), "file")], timeout=60), enrolments))
        assert [r.status_code for r in added] == [201] * 6, [r.text for r in added]
        assert sorted(r.json()["face_id"] for r in added) == [1, 2, 3, 4, 5, 6]
        with ThreadPoolExecutor(4) as pool:
            listed = list(pool.map(lambda _: httpx.get(
                f"{server.url}/v1/galleries/people/subjects", timeout=60), range(8)))
            found = list(pool.map(lambda name: httpx.post(
                f"{server.url}/v1/galleries/people/search",
                files=[upload(photo(shared_data, name, 4), "file")], timeout=60),
                [BUSH, POWELL, BLAIR] * 2))
        for r in listed:
            assert [(s["name"], s["faces"]) for s in r.json()["subjects"]] == \
                [(POWELL, 2), (BUSH, 2), (BLAIR, 2)]
        assert [r.json()["faces"][0]["match"] for r in found] == [BUSH, POWELL, BLAIR] * 2
        with httpx.Client(base_url=server.url, timeout=60) as c:
            assert c.delete(f"/v1/galleries/people/subjects/{POWELL}").json()["faces"] == 2
            for _ in range(6):  # neither worker still finds them
                r = c.post("/v1/galleries/people/search", params={"limit": 3},
                           files=[upload(photo(shared_data, POWELL, 4), "file")])
                assert [t["subject"] for t in r.json()["faces"][0]["top"]] in \
                    ([BUSH, BLAIR], [BLAIR, BUSH])
            assert c.delete("/v1/galleries/people").status_code == 200
            for _ in range(6):
                assert c.get("/v1/galleries/people/subjects").status_code == 404
    finally:
        server.stop()


def test_acknowledged_enrolments_survive_kill_9_and_a_restart(shared_data: Path,
                                                              tmp_path: Path) -> None:
    """Enrol in a loop, kill -9 the server while a request is in flight, and find every
    acknowledged face in the gallery, read directly and through a new server."""
    import httpx

    from facefuse.gallery import FaceGallery

    root = tmp_path / "galleries"
    server = Server("--gallery-root", str(root))
    people = [BUSH, POWELL, BLAIR]
    acked: list[tuple[int, str]] = []
    killed = threading.Event()

    def enrol() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for i in range(60):
                name = people[i % 3]
                try:
                    r = http.post(f"/v1/galleries/people/subjects/{name}/faces",
                                  files=[upload(photo(shared_data, name, 1 + i // 3 % 5),
                                                "file")])
                except httpx.TransportError:
                    assert killed.is_set()
                    return
                assert r.status_code == 201, r.text
                acked.append((r.json()["face_id"], name))

    try:
        assert httpx.post(f"{server.url}/v1/galleries", json={"name": "people"}
                          ).status_code == 201
        writer = threading.Thread(target=enrol)
        writer.start()
        while len(acked) < 4:
            assert writer.is_alive()
            time.sleep(0.01)
        time.sleep(0.05)  # most likely inside the next request
        killed.set()
        server.process.kill()
        server.process.wait(30)
        writer.join(60)
    finally:
        if server.process.poll() is None:
            server.stop()
    with FaceGallery.open(root / "people", readonly=True) as g:
        stored = {f.id: f.subject for f in g.faces()}
    assert len(acked) >= 4 and all(stored.get(i) == name for i, name in acked), \
        (acked, stored)
    again = Server("--gallery-root", str(root))
    try:
        r = httpx.post(f"{again.url}/v1/galleries/people/search",
                       files=[upload(photo(shared_data, POWELL, 6), "file")], timeout=60)
        assert r.status_code == 200 and r.json()["faces"][0]["match"] == POWELL, r.text
        listed = httpx.get(f"{again.url}/v1/galleries").json()["galleries"]
        assert listed[0]["faces"] == len(stored)
    finally:
        again.stop()


def test_the_command_line_loads_no_web_framework_until_serve_runs() -> None:
    code = ("import sys; from facefuse.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('fastapi', 'uvicorn', 'starlette', 'pydantic')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
