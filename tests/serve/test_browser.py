"""The page in a real browser: Debian's headless Chromium, driven by Selenium through chromedriver.

It opens the collection, opens an image, clicks an extracted object and checks that k results
appear, each with its crop and its image with the box drawn; then "more results", then a drawn
box. The page is screenshotted into the test's temporary folder; with SERVE_SCREENSHOT=1 the
screenshot goes to docs/serve.png instead (the README shows it; any other value is a path), so a
plain `make test` leaves the checkout unchanged:

    SERVE_SCREENSHOT=1 pytest tests/serve/test_browser.py

Skipped only when the chromium / chromedriver executables are absent (`make test` installs
Debian's packages).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
README_SCREENSHOT = ROOT / "docs" / "serve.png"
K = 5  # the live server's --k

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
    reason="no headless Chromium here (Debian packages chromium and chromium-driver; `make test` installs them)",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1440,960",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def _hits(driver):
    return driver.find_elements("css selector", "#hits li.hit")


def _check_hits(driver, n):
    hits = _hits(driver)
    assert len(hits) == n
    for hit in hits:
        box = hit.find_element("css selector", ".scene .box")
        assert box.size["width"] > 0 and box.size["height"] > 0  # the box drawn on its image
        assert hit.find_element("css selector", ".crop .crop-inner").size["width"] > 0  # the crop
        assert "d = " in hit.text
    ranks = [int(h.find_element("css selector", ".rank").text.lstrip("#")) for h in hits]
    assert ranks == list(range(1, n + 1))
    distances = [float(h.get_attribute("data-distance")) for h in hits]
    assert distances == sorted(distances)


def _click_object(driver, obj):
    """A click at the centre of an outlined object (the page picks the smallest object there)."""
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element(obj).click().perform()


def _all_pictures_loaded(driver) -> bool:
    return driver.execute_script(
        "return [...document.images].filter(i => i.offsetParent !== null).every(i => i.complete && i.naturalWidth > 0)"
    )


def screenshot_path(tmp_path: Path) -> Path:
    """Where the page's screenshot goes: the README's only when SERVE_SCREENSHOT asks for it."""
    asked = os.environ.get("SERVE_SCREENSHOT", "")
    if not asked:
        return tmp_path / "serve.png"
    return README_SCREENSHOT if asked == "1" else ROOT / asked


def test_click_an_object_then_more_results_then_draw_a_box(browser, live_server, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    browser.get(live_server + "/")
    _wait(browser, lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "1")
    cards = _wait(browser, lambda d: d.find_elements("css selector", "#grid a.card"))
    assert len(cards) == 6 and "objects" in cards[0].text
    assert browser.find_element("id", "embedding").get_attribute("value") == "model"

    cards[1].click()
    objects = _wait(browser, lambda d: d.find_elements("css selector", "#image-stage .obj"))
    # the largest object is the first outlined: clicking its top-left corner picks it (nothing smaller is there)
    ActionChains(browser).move_to_element_with_offset(
        objects[0], 3 - objects[0].size["width"] // 2, 0
    ).click().perform()
    _wait(browser, lambda d: len(_hits(d)) == K)
    _check_hits(browser, K)
    assert browser.find_elements("css selector", "#image-stage .obj.selected")
    assert "Query" in browser.find_element("id", "query").text

    browser.find_element("id", "more").click()
    _wait(browser, lambda d: len(_hits(d)) == 2 * K)
    _check_hits(browser, 2 * K)

    # a box drawn by dragging across the image: a new query, k results again
    stage = browser.find_element("id", "image-stage")
    w, h = stage.size["width"], stage.size["height"]
    ActionChains(browser).move_to_element_with_offset(stage, -w // 4, -h // 4).click_and_hold().move_by_offset(
        w // 8, h // 8
    ).move_by_offset(w // 8, h // 8).release().perform()
    _wait(browser, lambda d: "drawn" in d.find_element("id", "query").text and len(_hits(d)) == K)
    _check_hits(browser, K)

    # the pretrained embedding reruns the same query
    browser.execute_script("document.getElementById('results-info').textContent = ''")
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "embedding")).select_by_value("pretrained")
    _wait(browser, lambda d: "pretrained" in d.find_element("id", "results-info").text)
    _check_hits(browser, K)

    # back to the trained embedding and the clicked object, for the README's screenshot
    Select(browser.find_element("id", "embedding")).select_by_value("model")
    objects = _wait(browser, lambda d: d.find_elements("css selector", "#image-stage .obj"))
    ActionChains(browser).move_to_element_with_offset(
        objects[0], 3 - objects[0].size["width"] // 2, 0
    ).click().perform()
    _wait(browser, lambda d: "object" in d.find_element("id", "query").text and len(_hits(d)) == K)
    _wait(browser, _all_pictures_loaded)
    screenshot = screenshot_path(tmp_path)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000


def test_metrics_page_shows_the_table_and_pictures(browser, live_server):
    browser.get(live_server + "/#/metrics")
    rows = _wait(browser, lambda d: d.find_elements("css selector", "#metrics-table tbody tr"))
    assert rows[0].find_element("css selector", "th").text == "all"
    figures = _wait(browser, lambda d: d.find_elements("css selector", "#metrics-pictures figure"))
    assert {f.text for f in figures} == {"buckets.png", "examples.png", "pr.png"}
    _wait(browser, _all_pictures_loaded)


def test_upload_a_photo_and_draw_a_box(browser, live_server, tmp_path):
    import cv2
    import numpy as np
    from selenium.webdriver.common.action_chains import ActionChains

    photo = tmp_path / "photo.png"
    yy, xx = np.mgrid[0:120, 0:160]
    cv2.imwrite(str(photo), np.stack([xx % 256, yy * 2 % 256, (xx + yy) % 256], axis=2).astype(np.uint8))
    browser.get(live_server + "/#/upload")
    _wait(browser, lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "1")
    browser.find_element("id", "upload-file").send_keys(str(photo))
    stage = _wait(
        browser,
        lambda d: d.find_element("id", "upload-stage") if d.find_element("id", "upload-stage").is_displayed() else None,
    )
    w, h = stage.size["width"], stage.size["height"]
    ActionChains(browser).move_to_element_with_offset(stage, -w // 3, -h // 3).click_and_hold().move_by_offset(
        w // 4, h // 4
    ).move_by_offset(w // 4, h // 4).release().perform()
    _wait(browser, lambda d: "uploaded" in d.find_element("id", "query").text and len(_hits(d)) == K)
    _check_hits(browser, K)
