"""The annotation web app: its JSON API, and one full annotation driven in headless Chromium (Debian's
chromium + chromium-driver, through Selenium), ending in a saved row of the export."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from _inpaint_fixtures import RESOLUTION, STEPS, catalog, inpainter, masker, tiny_clipseg_dir, tiny_inpaint_dir  # noqa: F401
from hf_hardneg.inpaint.export import TABLE_NAME, ExportFolder
from hf_hardneg.inpaint.session import AnnotationSession, GenerationSettings

pytestmark = pytest.mark.coco
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def session(catalog, masker, inpainter, coco_mini, tmp_path):
    pytest.importorskip("starlette", reason='the web app needs the optional extra: pip install "hf_hardneg[inpaint]"')
    export = ExportFolder(tmp_path / "export", coco_dir=coco_mini)
    settings = GenerationSettings(num_candidates=3, num_inference_steps=STEPS, resolution=RESOLUTION)
    yield AnnotationSession(catalog, export, "color", "tt", masker, inpainter, settings=settings)
    export.close()


# -- the JSON API -----------------------------------------------------------------------------
@pytest.fixture
def client(session):
    from starlette.testclient import TestClient

    from hf_hardneg.inpaint.webapp import create_app

    with TestClient(create_app(session)) as test_client:
        yield test_client


def test_api_walks_through_one_sample(client, session):
    view = client.get("/api/task").json()
    task = view["task"]
    assert view["concept"] == "color" and task["image_id"] == session.pool.image_ids[0]
    assert view["progress"]["offered"] == len(session.pool.image_ids) and task["captions"]
    photo = client.get(task["photo_url"])
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert photo.content == session.current().photo.path.read_bytes()
    assert client.get(f"/api/photo/{task['image_id'] + 1}").status_code == 404  # only the one in hand
    mask = client.post("/api/mask", json={"image_id": task["image_id"], "prompt": "the object", "threshold": "0.5",
                                          "dilate_x": "3", "dilate_y": ""}).json()
    assert mask["overlay"].startswith("data:image/jpeg;base64,") and 0 < mask["coverage"] <= 1
    made = client.post("/api/inpaint", json={"image_id": task["image_id"], "prompt": "a purple object",
                                             "seed": "40", "guidance_scale": "6", "num_inference_steps": ""}).json()
    assert [c["seed"] for c in made["candidates"]] == [40, 41, 42]
    caption = task["captions"][0]["text"]
    refused = client.post("/api/save", json={"image_id": task["image_id"], "choice": 0, "quality": "okay",
                                             "coco_caption": caption, "inpaint_caption": caption})
    assert refused.status_code == 422 and refused.json()["reason"] == "unchanged_caption"
    saved = client.post("/api/save", json={"image_id": task["image_id"], "choice": 1, "quality": "okay",
                                           "coco_caption": caption, "inpaint_caption": caption + " In purple."}).json()
    assert saved["saved"]["inpaint_seed"] == 41 and saved["saved"]["guidance_scale"] == 6.0
    assert saved["saved"]["mask_dilate_x"] == 3 and saved["saved"]["mask_dilate_y"] == 0
    assert saved["task"]["image_id"] == session.pool.image_ids[1] and saved["progress"]["saved"] == 1
    skipped = client.post("/api/skip", json={"image_id": session.pool.image_ids[1], "reason": "dark"}).json()
    assert skipped["progress"]["skipped"] == 1 and skipped["task"]["image_id"] == session.pool.image_ids[2]


def test_api_answers_bad_requests_with_a_message(client, session):
    image_id = client.get("/api/task").json()["task"]["image_id"]
    assert client.post("/api/mask", content=b"not json").json() == {"error": "the request body must be a JSON object"}
    answer = client.post("/api/mask", json={"image_id": image_id, "prompt": "x", "threshold": "lots"})
    assert answer.status_code == 422 and "threshold='lots' is not a number" in answer.json()["error"]
    answer = client.post("/api/inpaint", json={"image_id": image_id, "prompt": "x"})
    assert answer.status_code == 400 and "make a mask first" in answer.json()["error"]
    answer = client.post("/api/save", json={"image_id": image_id, "choice": None})
    assert answer.status_code == 400 and "choose one of the candidates" in answer.json()["error"]
    answer = client.post("/api/mask", json={"image_id": image_id + 1, "prompt": "x"})
    assert answer.status_code == 400 and "not the photograph in hand" in answer.json()["error"]


# -- a real browser ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(session):
    """The web app on a free local port in a background thread; yields its URL."""
    uvicorn = pytest.importorskip("uvicorn", reason='the web app needs the optional extra: pip install "hf_hardneg[inpaint]"')

    from hf_hardneg.inpaint.webapp import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(session), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the web app did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def served(session):
    with serving(session) as url:
        yield url


@pytest.fixture
def browser(tmp_path):
    pytest.importorskip("selenium", reason="the browser test needs selenium (part of the dev extra)")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (path.is_file() and os.access(path, os.X_OK)) and not shutil.which(path.name):
            pytest.skip(f"{path} not found: install Debian's chromium and chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium must never fetch a browser or driver of its own
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM if CHROMIUM.is_file() else shutil.which("chromium"))
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1100", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER if CHROMEDRIVER.is_file()
                                                  else shutil.which("chromedriver"))), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_one_full_annotation_in_a_headless_browser(served, browser, session, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    first, second = session.pool.image_ids[:2]
    browser.get(served)
    wait.until(ec.text_to_be_present_in_element((By.ID, "image-id"), str(first)))
    assert browser.find_element(By.ID, "concept").text == "color"
    assert "0 saved" in browser.find_element(By.ID, "progress").text
    assert browser.find_elements(By.CSS_SELECTOR, "#captions mark")  # the colour keyword is highlighted
    wait.until(lambda d: d.execute_script("return document.getElementById('photo').naturalWidth") > 0)

    # 2. mask: prompt, threshold and enlargement, Enter -> overlay preview
    for field, value in (("threshold", "0.5"), ("dilate-x", "2"), ("dilate-y", "1")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, "mask-prompt").send_keys("the main object", Keys.ENTER)
    wait.until(lambda d: d.find_element(By.ID, "overlay").is_displayed())
    assert browser.find_element(By.ID, "overlay").get_attribute("src").startswith("data:image/jpeg")
    assert "mask covers" in browser.find_element(By.ID, "coverage").text

    # 3. inpaint: prompt and seed, Enter -> three candidates
    browser.find_element(By.ID, "seed").send_keys("21")
    browser.find_element(By.ID, "inpaint-prompt").send_keys("a completely purple object", Keys.ENTER)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#candidates .candidate img")) == 3)
    assert "seed 22" in browser.find_element(By.ID, "candidate-2").text
    if os.environ.get("HF_HARDNEG_SCREENSHOTS"):  # to look at the page: a folder to write PNGs to
        browser.save_screenshot(os.path.join(os.environ["HF_HARDNEG_SCREENSHOTS"], "annotate_candidates.png"))

    # 4. keyboard: 2 chooses the second candidate, v rates it "very good"
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("2")
    body.send_keys("v")
    assert "chosen" in browser.find_element(By.ID, "candidate-2").get_attribute("class")
    assert browser.find_element(By.ID, "quality-very-good").is_selected()

    # the new caption starts as the chosen COCO caption: saving it unchanged is refused on the page
    caption_box = browser.find_element(By.ID, "new-caption")
    original = browser.find_element(By.CSS_SELECTOR, "#captions input:checked").get_attribute("value")
    assert caption_box.get_attribute("value") == original
    caption_box.send_keys(Keys.CONTROL, Keys.ENTER)
    wait.until(ec.text_to_be_present_in_element((By.ID, "message"), "equals the original"))
    assert not (session.export.root / TABLE_NAME).exists()

    caption_box.send_keys(Keys.END, " Everything is purple.")
    caption_box.send_keys(Keys.CONTROL, Keys.ENTER)
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "saved color-"))
    wait.until(ec.text_to_be_present_in_element((By.ID, "image-id"), str(second)))
    assert "1 saved" in browser.find_element(By.ID, "progress").text
    assert not browser.find_element(By.ID, "overlay").is_displayed()  # the next photograph has no mask yet

    rows = [json.loads(line) for line in (session.export.root / TABLE_NAME).read_text().splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert row["coco_image_id"] == first and row["quality"] == "very good" and row["inpaint_seed"] == 22
    assert row["coco_caption"] == original and row["inpaint_caption"] == original + " Everything is purple."
    assert (row["mask_prompt"], row["mask_threshold"], row["mask_dilate_x"], row["mask_dilate_y"]) == (
        "the main object", 0.5, 2, 1)
    assert row["inpaint_prompt"] == "a completely purple object" and row["annotator"] == "tt"
    assert (session.export.root / row["inpaint_file_name"]).is_file()
    assert (session.export.root / row["mask_file_name"]).is_file()

    # s skips the next photograph (outside a text field)
    browser.find_element(By.TAG_NAME, "body").click()
    browser.find_element(By.TAG_NAME, "body").send_keys("s")
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), f"skipped {second}"))
    assert "1 skipped" in browser.find_element(By.ID, "progress").text
    assert session.progress()["skipped"] == 1


# -- the command ------------------------------------------------------------------------------
def test_annotate_command_builds_the_session_it_serves(coco_mini, tiny_clipseg_dir, tiny_inpaint_dir, tmp_path,
                                                       monkeypatch, capsys):
    pytest.importorskip("starlette", reason='the web app needs the optional extra: pip install "hf_hardneg[inpaint]"')
    import hf_hardneg.inpaint.webapp as webapp
    from hf_hardneg.cli import main

    served = {}
    monkeypatch.setattr(webapp, "serve", lambda session, host, port: served.update(session=session, where=(host, port)))
    (tmp_path / "fashion.yaml").write_text("concepts:\n  - name: garment\n    words: [shirt, jacket, dress, hat]\n")
    code = main(["annotate", "--export", str(tmp_path / "export"), "--coco-dir", str(coco_mini), "--concept", "color",
                 "--annotator", "ab", "--concept-file", str(tmp_path / "fashion.yaml"), "--keywords", "garment",
                 "--mask-model", str(tiny_clipseg_dir), "--inpaint-model", str(tiny_inpaint_dir), "--device", "cpu",
                 "--steps", "3", "--candidates", "2", "--port", "8123"])
    out = capsys.readouterr().out
    assert code == 0, out
    session = served["session"]
    assert served["where"] == ("127.0.0.1", 8123)
    assert (session.concept, session.annotator, session.pool.keyword_concept) == ("color", "ab", "garment")
    assert (session.settings.num_candidates, session.settings.num_inference_steps) == (2, 3)
    garment = re.compile(r"\b(shirt|jacket|dress|hat)\b", re.IGNORECASE)
    assert session.pool.image_ids
    for image_id in session.pool.image_ids:  # photographs chosen by the user's own keywords
        assert any(garment.search(c) for c in session.catalog.photo(image_id).captions)
    assert "photograph(s) offered for color (keywords: garment)" in out and "http://127.0.0.1:8123" in out
    assert f"publish with: hf-hardneg build-inpaintcoco --source {tmp_path / 'export'} --output OUT" in out
    assert not (tmp_path / "export" / ".hf-hardneg-inpaint.lock").exists()  # released on the way out


def test_annotate_command_reports_bad_options_in_one_line(coco_mini, tmp_path, capsys):
    from hf_hardneg.cli import main

    code = main(["annotate", "--export", str(tmp_path / "e"), "--coco-dir", str(tmp_path / "nowhere"),
                 "--concept", "size", "--annotator", "ab"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "COCO captions file not found" in err
    (tmp_path / "c.yaml").write_text("concepts:\n  - name: garment\n    words: [shirt, hat]\n")
    code = main(["annotate", "--export", str(tmp_path / "e"), "--coco-dir", str(coco_mini), "--concept", "size",
                 "--annotator", "ab", "--concept-file", str(tmp_path / "c.yaml"), "--keywords", "fit"])
    assert code == 2 and "--keywords 'fit' is not a concept of" in capsys.readouterr().err


def test_annotate_command_names_the_missing_extra_before_loading_models(coco_mini, tmp_path, monkeypatch, capsys):
    import importlib.util

    from hf_hardneg.cli import main

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else
                        real_find_spec(name, *a))
    code = main(["annotate", "--export", str(tmp_path / "e"), "--coco-dir", str(coco_mini), "--concept", "size",
                 "--annotator", "ab", "--mask-model", "never/loaded"])
    err = capsys.readouterr().err
    assert code == 2 and 'needs uvicorn: pip install "hf_hardneg[inpaint]"' in err
    assert not (tmp_path / "e").exists()  # nothing was created or loaded


def test_object_replacement_is_limited_to_the_supercategory_on_the_page(catalog, masker, inpainter, coco_mini,
                                                                        tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    pytest.importorskip("starlette", reason='the web app needs the optional extra: pip install "hf_hardneg[inpaint]"')
    export = ExportFolder(tmp_path / "objects", coco_dir=coco_mini)
    settings = GenerationSettings(num_candidates=3, num_inference_steps=STEPS, resolution=RESOLUTION)
    session = AnnotationSession(catalog, export, "object", "tt", masker, inpainter, settings=settings)
    while not [c for c in session.current().photo.categories if catalog.same_supercategory(c)]:
        session.skip("no annotated object with siblings")
    photo = session.current().photo
    changed = next(c for c in photo.categories if catalog.same_supercategory(c))
    allowed = catalog.same_supercategory(changed)
    foreign = "bus" if catalog.category(changed)["supercategory"] != "vehicle" else "dog"

    with serving(session) as url, export:
        wait = WebDriverWait(browser, 60)
        browser.get(url)
        wait.until(ec.text_to_be_present_in_element((By.ID, "image-id"), str(photo.image_id)))
        in_photo = browser.find_elements(By.CSS_SELECTOR, "#changed-object optgroup[label='in this photograph'] option")
        assert [o.get_attribute("value") for o in in_photo] == list(photo.categories)
        Select(browser.find_element(By.ID, "changed-object")).select_by_value(changed)
        options = [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "new-object")).options]
        assert options == ["", *allowed]  # only the same super-category is offered
        browser.find_element(By.ID, "mask-prompt").send_keys(changed, Keys.ENTER)
        wait.until(lambda d: not d.find_element(By.ID, "inpaint-prompt").get_attribute("disabled"))
        browser.find_element(By.ID, "inpaint-prompt").send_keys(f"a red {foreign}", Keys.ENTER)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#candidates .candidate")) == 3)
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys("1")
        body.send_keys("o")
        caption_box = browser.find_element(By.ID, "new-caption")
        caption_box.send_keys(Keys.END, " (edited)")
        caption_box.send_keys(Keys.CONTROL, Keys.ENTER)  # the prompt names an object of another super-category
        wait.until(ec.text_to_be_present_in_element((By.ID, "message"), f"cannot replace '{changed}'"))
        assert f"allowed: {', '.join(allowed)}" in browser.find_element(By.ID, "message").text
        Select(browser.find_element(By.ID, "new-object")).select_by_value(allowed[0])
        browser.find_element(By.ID, "save").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "saved object-"))
    (row,) = [json.loads(line) for line in (tmp_path / "objects" / TABLE_NAME).read_text().splitlines()]
    assert row["concept"] == "object" and row["coco_category"] == changed and row["quality"] == "okay"
    assert row["inpaint_prompt"] == f"a red {foreign}"
