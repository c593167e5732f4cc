import cv2
import numpy as np
import pandas as pd
import pytest

from tests.torch_threads import one_torch_thread  # noqa: F401  (autouse in this folder)


def write_scenes(folder, n, bad=()):
    """``n`` small PNG scenes (coloured shapes on a textured background); indices in ``bad`` are
    written as corrupt JPEG bytes.  Returns the image table (image_id, path)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids, paths = [], []
    for i in range(n):
        h, w = 48 + 8 * (i % 3), 64
        if i in bad:
            path = folder / f"bad{i}.jpg"
            path.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
        else:
            scene = rng.integers(150, 200, (h, w, 3), dtype=np.uint8)
            x, y = 4 + 3 * i % 20, 6 + 5 * i % 14
            cv2.rectangle(scene, (x, y), (x + 18, y + 20), (0, 0, 220), -1)
            cv2.circle(scene, (w - 16, h - 14), 9 + i % 4, (20, 160, 20), -1)
            path = folder / f"img{i}.png"
            cv2.imwrite(str(path), scene)
        ids.append(100 + i)
        paths.append(str(path))
    return pd.DataFrame({"image_id": ids, "path": paths})


@pytest.fixture
def scenes(tmp_path):
    return lambda n, bad=(), name="images": write_scenes(tmp_path / name, n, bad)
