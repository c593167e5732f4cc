"""The serve API through FastAPI's test client on a tiny real index: browsing, the three kinds of
query, more results, switching embedding, metrics, and the safety rules (404 for anything outside
the dataset's own images, 400/413 for bad uploads, nothing written)."""

from __future__ import annotations

import io
import socket

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.serve.conftest import BACKBONE, DATASET, make_app, tree_state

LOCAL = "http://127.0.0.1"  # the Host the server answers (TestClient says "testserver" otherwise)


@pytest.fixture(scope="module")
def client(engine):
    return TestClient(make_app(engine, k=4, max_upload_mb=0.05), base_url=LOCAL)


def _first_image(client):
    image_id = client.get("/api/images").json()["images"][0]["image_id"]
    return client.get(f"/api/images/{image_id}").json()


def _png(width=64, height=48) -> bytes:
    rng = np.random.default_rng(0)
    ok, buf = cv2.imencode(".png", rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    return buf.tobytes()


def test_config_lists_the_built_indexes(client):
    config = client.get("/api/config").json()
    assert config["catalog"] == [
        {"backbone": BACKBONE, "dataset": DATASET, "embeddings": ["model", "pretrained"], "metrics": True}
    ]
    assert config["default"] == {"backbone": BACKBONE, "dataset": DATASET, "embedding": "model"} and config["k"] == 4


def test_images_are_paged_and_show_their_objects(client, tiny_project):
    full = client.get("/api/images").json()
    assert full["total"] == 6 and full["pages"] == 1 and len(full["images"]) == 6
    pages = [client.get("/api/images", params={"page": p, "per_page": 4}).json() for p in (0, 1, 2)]
    assert [len(p["images"]) for p in pages] == [4, 2, 0] and pages[0]["pages"] == 2
    assert [im["image_id"] for p in pages for im in p["images"]] == [im["image_id"] for im in full["images"]]
    image = _first_image(client)
    assert image["objects"] == len(image["boxes"]) > 0
    x1, y1, x2, y2 = image["boxes"][0]["box"]
    assert 0 <= x1 < x2 <= image["width"] and 0 <= y1 < y2 <= image["height"]
    assert client.get("/api/images/999999").status_code == 404
    jpeg = client.get(f"/images/{image['image_id']}.jpg", params={"max_side": 64})
    assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.content)).size == (64, 64)


def test_clicked_object_finds_itself_first_then_more_results(client):
    image = _first_image(client)
    obj = image["boxes"][0]
    res = client.post("/api/search", json={"image_id": image["image_id"], "box": obj["box"]})
    assert res.status_code == 200, res.text
    body = res.json()
    hits = body["hits"]
    assert len(hits) == 4 and [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert hits[0]["object_id"] == obj["object_id"] and hits[0]["distance"] < 1e-2
    assert all(a["distance"] <= b["distance"] for a, b in zip(hits, hits[1:]))
    assert all(h["width"] == image["width"] and len(h["box"]) == 4 for h in hits)
    more = client.post("/api/more", json={"token": body["token"], "offset": 4, "k": 3}).json()
    assert [h["rank"] for h in more["hits"]] == [5, 6, 7]
    assert not {h["object_id"] for h in more["hits"]} & {h["object_id"] for h in hits}
    # "more" past the end of the gallery is empty, not an error
    tail = client.post("/api/more", json={"token": body["token"], "offset": body["total"], "k": 3}).json()
    assert tail["hits"] == []
    assert client.post("/api/more", json={"token": "nope", "offset": 0}).status_code == 404


def test_results_from_other_images_only(client):
    image = _first_image(client)
    query = {"image_id": image["image_id"], "box": image["boxes"][0]["box"], "k": 5, "exclude_image": True}
    body = client.post("/api/search", json=query).json()
    assert len(body["hits"]) == 5 and body["exclude_image"] == image["image_id"]
    more = client.post("/api/more", json={"token": body["token"], "offset": 5, "k": 5}).json()
    assert all(h["image_id"] != image["image_id"] for h in body["hits"] + more["hits"])
    assert [h["rank"] for h in more["hits"]] == [6, 7, 8, 9, 10]


def test_drawn_box_and_pretrained_embedding(client):
    image = _first_image(client)
    box = [10, 10, 90, 80]
    model = client.post("/api/search", json={"image_id": image["image_id"], "box": box, "k": 6}).json()
    pre = client.post(
        "/api/search", json={"image_id": image["image_id"], "box": box, "k": 6, "embedding": "pretrained"}
    ).json()
    assert len(model["hits"]) == len(pre["hits"]) == 6 and pre["embedding"] == "pretrained"
    outside = client.post("/api/search", json={"image_id": image["image_id"], "box": [900, 900, 990, 990]})
    assert outside.status_code == 400 and "outside the image" in outside.json()["detail"]
    bad = client.post("/api/search", json={"image_id": image["image_id"], "box": box, "embedding": "random"})
    assert bad.status_code == 400 and "embedding must be" in bad.json()["detail"]
    other = client.post("/api/search", json={"image_id": image["image_id"], "box": box, "backbone": "resnet50"})
    assert other.status_code == 404 and "no built index" in other.json()["detail"]
    assert client.post("/api/search", json={"image_id": 424242, "box": box}).status_code == 404


def test_uploaded_photo_with_a_box(client):
    res = client.post("/api/search/upload", params={"box": "5,5,40,30", "k": 3}, content=_png())
    assert res.status_code == 200, res.text
    assert len(res.json()["hits"]) == 3
    whole = client.post("/api/search/upload", content=_png())
    assert whole.status_code == 200 and len(whole.json()["hits"]) == 4


def test_malformed_uploads_are_400_with_a_message_and_big_ones_413(client):
    for content in (b"this is not an image", b"", _png()[:60], b"%PDF-1.4 ..."):
        res = client.post("/api/search/upload", content=content)
        assert res.status_code == 400, (content[:10], res.text)
        assert "JPEG, PNG" in res.json()["detail"]
    bad_box = client.post("/api/search/upload", params={"box": "1,2,three,4"}, content=_png())
    assert bad_box.status_code == 400 and "four numbers" in bad_box.json()["detail"]
    big = client.post("/api/search/upload", content=b"\0" * 60_000)  # limit: 0.05 MiB
    assert big.status_code == 413 and "limit" in big.json()["detail"]

    def chunks():  # no Content-Length: refused while streaming
        for _ in range(8):
            yield b"\0" * 10_000

    assert client.post("/api/search/upload", content=chunks()).status_code == 413


TRAVERSALS = [
    "/images/../../../../etc/passwd",
    "/images/..%2f..%2f..%2fetc%2fpasswd",
    "/images/%2e%2e/%2e%2e/params.yaml",
    "/images/-1.jpg",
    "/images/1.jpg/../../../etc/passwd",
    "/images/data/synthetic/dataset/images/test/000001.png",
    "/static/../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%2f..%2fapp.py",
    "/static/%2e%2e%2fapp.py",
    "/metrics/efficientnet_lite0/synthetic/..%2f..%2f..%2fparams.yaml",
    "/metrics/efficientnet_lite0/synthetic/buckets.csv",
    "/metrics/efficientnet_lite0/..%2f..%2fdata/buckets.png",
    "/metrics/resnet50/synthetic/buckets.png",
    "/etc/passwd",
]


@pytest.mark.parametrize("url", TRAVERSALS)
def test_path_traversal_is_404(client, url):
    res = client.get(url)
    assert res.status_code == 404, (url, res.status_code, res.text[:200])
    assert b"root:" not in res.content


def test_path_traversal_over_a_real_socket_is_404(live_server):
    """Raw request lines, as a client that does not normalise '..' sends them."""
    host, port = live_server.removeprefix("http://").split(":")
    for url in TRAVERSALS[:4] + ["/static/../../../../etc/passwd", "/static/../app.py"]:
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        assert reply.split(b"\r\n", 1)[0].split(b" ")[1] == b"404", (url, reply[:200])


def test_other_host_names_are_refused(client):
    assert client.get("/api/config", headers={"Host": "attacker.example"}).status_code == 400
    assert client.get("/api/config", headers={"Host": "127.0.0.1:8000"}).status_code == 200


def test_metrics_and_pictures(client):
    body = client.get("/api/metrics").json()
    assert body["metrics"]["backbone"] == BACKBONE and body["metrics"]["model"]["all"]["queries"] > 0
    assert body["pictures"] == ["buckets.png", "examples.png", "pr.png"]  # every PNG the evaluate stage wrote
    pic = client.get(f"/metrics/{BACKBONE}/{DATASET}/buckets.png")
    assert pic.status_code == 200 and pic.content[:4] == b"\x89PNG"
    assert client.get("/api/metrics", params={"dataset": "lvis"}).status_code == 404


def test_page_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


def test_the_server_never_writes_under_the_project(engine, tiny_project):
    before = tree_state(tiny_project)
    client = TestClient(make_app(engine), base_url=LOCAL)
    image = _first_image(client)
    for embedding in ("model", "pretrained"):
        client.post("/api/search", json={"image_id": image["image_id"], "box": [0, 0, 50, 50], "embedding": embedding})
    client.post("/api/search/upload", content=_png())
    client.get(f"/images/{image['image_id']}.jpg")
    client.get("/api/metrics")
    assert tree_state(tiny_project) == before
