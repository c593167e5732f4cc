"""The search building blocks shared by the `search` command and the `serve` page."""

import faiss
import numpy as np
import pandas as pd
import pytest

from stages.errors import UserError
from stages.index.search import Gallery, crop_query


def _gallery(n=10, d=4):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    index = faiss.IndexFlatL2(d)
    index.add(vectors)
    objects = pd.DataFrame(
        {
            "object_id": np.arange(100, 100 + n),
            "image_id": np.arange(n) % 3,
            "x1": np.arange(n, dtype=float),
            "y1": 0.0,
            "x2": np.arange(n, dtype=float) + 5,
            "y2": 5.0,
        }
    )
    images = pd.DataFrame({"image_id": [0, 1], "path": ["/a.png", "/b.png"], "width": 9, "height": 9})
    return Gallery(index, objects, images), vectors


def test_nearest_ranks_pages_and_maps_rows_to_objects():
    gallery, vectors = _gallery()
    first = gallery.nearest(vectors[[4]], 3)
    assert [h.rank for h in first] == [1, 2, 3]
    assert first[0].object_id == 104 and first[0].distance == pytest.approx(0.0, abs=1e-3)
    assert first[0].box == (4.0, 0.0, 9.0, 5.0) and first[0].image_id == 1 and first[0].image_path == "/b.png"
    more = gallery.nearest(vectors[[4]], 3, offset=3)
    assert [h.rank for h in more] == [4, 5, 6]
    everything = gallery.nearest(vectors[[4]], 20)
    assert [h.object_id for h in everything[:6]] == [h.object_id for h in first + more]
    assert len(everything) == 10 and everything[-1].distance >= everything[0].distance
    # an image missing from the table, and FAISS padding rows (-1), are handled without a loop over objects
    assert gallery.nearest(vectors[[2]], 1)[0].image_path == "?"
    hits = gallery.hits(np.array([0.25, 1.0]), np.array([7, -1]), offset=5)
    assert len(hits) == 1 and hits[0].rank == 6 and hits[0].distance == pytest.approx(0.5)


def test_nearest_can_leave_out_the_query_image():
    gallery, vectors = _gallery()
    everything = gallery.nearest(vectors[[4]], 10)
    others = [h for h in everything if h.image_id != 1]
    kept = gallery.nearest(vectors[[4]], 3, exclude_image=1)
    assert [h.object_id for h in kept] == [h.object_id for h in others[:3]] and [h.rank for h in kept] == [1, 2, 3]
    page2 = gallery.nearest(vectors[[4]], 3, offset=3, exclude_image=1)
    assert [h.object_id for h in page2] == [h.object_id for h in others[3:6]] and page2[0].rank == 4
    assert len(gallery.nearest(vectors[[4]], 10, exclude_image=1)) == len(others) == 7


def test_gallery_refuses_an_index_that_does_not_match_its_table():
    gallery, _ = _gallery()
    with pytest.raises(UserError, match="rebuild the index"):
        Gallery(gallery.index, gallery.objects.iloc[:5], gallery.images)


def test_crop_query_checks_the_box():
    image = np.zeros((20, 30, 3), np.uint8)
    crop, area = crop_query(image, None, 16, "x")
    assert crop.shape == (11, 16, 3) and area == image.shape[0] * image.shape[1]
    crop, area = crop_query(image, (25, 10, 60, 40), 8, "x")
    assert crop.shape[:2] == (8, 4) and area == 5 * 10  # clipped to 5x10 px
    with pytest.raises(UserError, match="empty"):
        crop_query(image, (5, 5, 5, 9), 8, "x")
    with pytest.raises(UserError, match="empty"):
        crop_query(image, (float("nan"), 0, 5, 9), 8, "x")
    with pytest.raises(UserError, match="outside the image x"):
        crop_query(image, (40, 40, 50, 50), 8, "x")
