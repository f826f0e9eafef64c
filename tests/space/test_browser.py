"""The Space as a person uses it: the exported app started on 127.0.0.1 and driven in headless Chromium.

Needs Debian's `chromium` and `chromium-driver` (/usr/bin/chromedriver) and selenium; it is skipped where they are
missing, unless UNIMP_REQUIRE_BROWSER=1 (as `.ci/run` sets), which makes a missing browser a failure. Screenshots go
to the test's tmp folder, and to $UNIMP_SCREENSHOTS too when that is set.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1700")
START_LIMIT_S = 60
WAIT_S = 60


def _browser_or_skip():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).is_file()]
    for module in ("selenium", "gradio"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        message = f"needs {', '.join(missing)} (apt-get install chromium chromium-driver; pip install -e '.[dev,demo]')"
        if os.environ.get("UNIMP_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(space_export, tmp_path_factory):
    """The exported Space's app.py, started as a Space starts it (its own folder, only its own config), timed."""
    _browser_or_skip()
    port = _free_port()
    logs = tmp_path_factory.mktemp("app-logs") / "app.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1",
           "HF_MODULES_CACHE": str(tmp_path_factory.mktemp("modules"))}
    env.pop("PYTHONPATH", None)  # the app needs no UniMP package: its code comes with the model
    started = time.perf_counter()
    with logs.open("w") as log:
        command = [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)]
        process = subprocess.Popen(command, cwd=space_export["space"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, logs.read_text()[-3000:]
            assert time.perf_counter() - started < START_LIMIT_S, f"not up in {START_LIMIT_S} s:\n{logs.read_text()}"
            time.sleep(0.25)
        startup = time.perf_counter() - started
        print(f"\napp up in {startup:.1f} s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(app_url, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.get(app_url)
    yield driver
    driver.quit()


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(
        lambda d: condition(d), message=f"waiting for {what}"
    )


def _loaded_images(driver, gallery: str) -> list:
    """The gallery's pictures that the browser has loaded and decoded."""
    from selenium.webdriver.common.by import By

    images = driver.find_elements(By.CSS_SELECTOR, f"#{gallery} img")
    return [image for image in images if driver.execute_script("return arguments[0].naturalWidth", image) > 0]


def _screenshot(driver, path: Path) -> None:
    driver.save_screenshot(str(path))
    if os.environ.get("UNIMP_SCREENSHOTS"):
        Path(os.environ["UNIMP_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["UNIMP_SCREENSHOTS"]) / path.name)


def _choose(driver, dropdown: str, typed: str, option: str) -> None:
    """Type into a filterable dropdown and click the option with that label."""
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.CSS_SELECTOR, f"#{dropdown} input")
    box.click()
    box.send_keys(typed)
    choice = _wait(driver, lambda d: [o for o in d.find_elements(By.CSS_SELECTOR, "ul[role=listbox] li")
                                      if o.text.strip() == option], f"the option {option!r}")
    choice[0].click()


def test_a_person_builds_a_history_and_sees_ten_recommendations(browser, tmp_path):
    from selenium.webdriver.common.by import By

    _wait(browser, lambda d: "ready" in d.find_element(By.ID, "status").text, "the model to load")
    _choose(browser, "add-items", "Red", "Red shirt · i00")
    _choose(browser, "add-items", "hat", "Green hat · i14")
    browser.find_element(By.ID, "add").click()
    _wait(browser, lambda d: len(_loaded_images(d, "history-cards")) == 2, "the history's two pictures")
    assert browser.find_element(By.CSS_SELECTOR, "#history textarea").get_attribute("value") == "i00, i14"
    browser.find_element(By.ID, "recommend").click()
    cards = _wait(browser, lambda d: len(found := _loaded_images(d, "recommendations")) == 10 and found,
                  "ten recommended item cards with pictures")
    captions = [card.get_attribute("alt") for card in cards]
    assert [caption.split(".")[0] for caption in captions] == [str(rank) for rank in range(1, 11)], captions
    table = browser.find_element(By.ID, "recommendations-table").text
    assert table.count("i") >= 10 and "1" in table
    _screenshot(browser, tmp_path / "recommendations.png")
    assert (tmp_path / "recommendations.png").stat().st_size > 10_000


def test_generated_images_appear_beside_the_retrieved_items(browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.find_element(By.XPATH, "//button[@role='tab' and normalize-space()='Generate images']").click()
    query = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#generate-query textarea, #generate-query input"),
                  "the generate tab")
    query.send_keys("red hat")
    browser.find_element(By.ID, "generate").click()
    _wait(browser, lambda d: len(_loaded_images(d, "generated")) == 4 and len(_loaded_images(d, "retrieved")) == 5,
          "four generated images and five retrieved items")
    _screenshot(browser, tmp_path / "generated_images.png")


def test_bad_input_shows_a_message_not_a_traceback(browser):
    from selenium.webdriver.common.by import By

    browser.find_element(By.XPATH, "//button[@role='tab' and normalize-space()='Recommend']").click()
    history = browser.find_element(By.CSS_SELECTOR, "#history textarea")
    history.clear()
    history.send_keys("i00, ZZ9")
    browser.find_element(By.ID, "recommend").click()
    message = "Unknown item id 'ZZ9' in the history: it is not in this model's catalogue of 24 items."
    toasts = "[data-testid=toast-body]"
    _wait(browser, lambda d: any(message in t.text for t in d.find_elements(By.CSS_SELECTOR, toasts)), "the message")
    assert "Traceback" not in browser.page_source
