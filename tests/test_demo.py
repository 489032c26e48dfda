"""The /demo page: served with a strict CSP, and driven in a real headless Chromium against real uvicorn.

Chromium and its driver are Debian's ``chromium`` and ``chromium-driver`` (``make chromium``, which
``make test`` runs). ``FACEVERIFY_DEMO_SCREENSHOTS=reports/demo`` also copies the screenshots there.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.api.routes.demo import CONTENT_SECURITY_POLICY, DEMO_DIR
from service.main import create_app
from tests.api_support import E2E, REAL_STORE_ROOT, make_settings, needs_real_model
from tests.live_server import Server, start_server

ROOT = Path(__file__).resolve().parents[1]
DEEPFACE = E2E / "deepface"
API_KEY = "demo-test-key"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


class _Inline(HTMLParser):
    """Collects what a strict CSP would block: inline scripts, style elements and attributes, handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style>")
        self.found += [f"{tag}[{name}]" for name in names if name == "style" or name.startswith("on")]


def test_demo_is_served_with_a_strict_csp(tmp_path: Path) -> None:
    settings = make_settings(REAL_STORE_ROOT, tmp_path / "gallery.db")
    with TestClient(create_app(settings)) as client:
        page = client.get("/demo")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for path in ("/demo", "/demo/assets/demo.js", "/demo/assets/demo.css"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["x-content-type-options"] == "nosniff"
        assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe" not in CONTENT_SECURITY_POLICY
        slash = client.get("/demo/", follow_redirects=False)
        assert slash.status_code == 308 and slash.headers["location"] == "/demo"
        missing = client.get("/demo/assets/nothing.js")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"
        # The API's own answers carry no page policy.
        assert "content-security-policy" not in client.get("/healthz").headers
    parser = _Inline()
    parser.feed((DEMO_DIR / "index.html").read_text())
    assert parser.found == []
    script = (DEMO_DIR / "demo.js").read_text()
    assert not re.search(r"\binnerHTML\b|\beval\(|new Function|setAttribute\(\"style", script)

    with TestClient(create_app(make_settings(REAL_STORE_ROOT, tmp_path / "off.db", demo=False))) as client:
        assert client.get("/demo").status_code == 404


# ---- a real browser ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("demo-server")
    settings = {
        "FACEVERIFY_STORE_PATH": str(REAL_STORE_ROOT),
        "FACEVERIFY_GALLERY_URL": f"sqlite:///{folder}/gallery.db",
        "FACEVERIFY_API_KEY": API_KEY,
    }
    srv = start_server(settings, folder / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), (
        "chromium / chromedriver missing: `make chromium` installs the Debian packages"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1280,1500",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _screenshot(driver, tmp_path: Path, name: str) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path / f"{name}.png"
    driver.save_screenshot(str(path))
    if target := os.environ.get("FACEVERIFY_DEMO_SCREENSHOTS"):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
    return path


@needs_real_model
def test_demo_in_chromium(server: Server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = browser
    wait = WebDriverWait(driver, 30)
    find = driver.find_element
    driver.get(f"{server.base_url}/demo")

    # Without the key, the model list is refused and the page says so with the problem's title.
    wait.until(lambda d: "Unauthorized" in find(By.ID, "models-status").text)
    find(By.ID, "api-key").send_keys(API_KEY)
    find(By.ID, "reload-models").click()
    wait.until(lambda d: "variants" in find(By.ID, "models-status").text)
    models = httpx.get(f"{server.base_url}/v1/models", headers={"X-API-Key": API_KEY}).json()
    variants = Select(find(By.ID, "variant"))
    assert [o.get_attribute("value") for o in variants.options] == [v["ref"] for v in models["variants"]]
    assert variants.first_selected_option.get_attribute("value") == models["default"]

    def verify(a: str, b: str) -> str:
        find(By.ID, "verify-a").send_keys(str(DEEPFACE / a))
        find(By.ID, "verify-b").send_keys(str(DEEPFACE / b))
        find(By.ID, "verify-run").click()
        wait.until(
            lambda d: (
                find(By.ID, "verify-result").is_displayed() or find(By.ID, "verify-error").is_displayed()
            )
        )
        wait.until(ec.element_to_be_clickable((By.ID, "verify-run")))
        return find(By.ID, "verify-decision").text

    assert verify("img1.jpg", "img2.jpg") == "match"  # master.csv: the same person
    assert find(By.ID, "verify-variant").text == models["default"]
    threshold = float(find(By.ID, "verify-threshold").text)
    assert float(find(By.ID, "verify-score").text) >= threshold > 0
    # The previews were drawn with the faces' boxes: the canvases hold the scaled photos.
    assert int(find(By.ID, "verify-a-canvas").get_attribute("width")) > 0
    _screenshot(driver, tmp_path, "verify-match")

    assert verify("img1.jpg", "img13.jpg") == "no match"  # master.csv: two different people
    assert float(find(By.ID, "verify-score").text) < threshold
    _screenshot(driver, tmp_path, "verify-no-match")

    # A non-image: the service's problem title, no result, no stack.
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("this is not a photo\n")
    find(By.ID, "verify-a").send_keys(str(not_an_image))
    find(By.ID, "verify-run").click()
    error = wait.until(ec.visibility_of_element_located((By.ID, "verify-error")))
    wait.until(lambda d: error.text.strip() != "")
    title = error.find_element(By.CLASS_NAME, "title").text
    assert title in {"Invalid image", "Unsupported image format"}, error.text
    assert not find(By.ID, "verify-result").is_displayed()
    assert "Traceback" not in error.text and "Error:" not in error.text
    _screenshot(driver, tmp_path, "verify-error")

    # Enrol from two photos, identify a third, delete the user.
    find(By.ID, "enroll-user").send_keys("demo-person")
    find(By.ID, "enroll-images").send_keys(f"{DEEPFACE / 'img1.jpg'}\n{DEEPFACE / 'img2.jpg'}")
    find(By.ID, "enroll-run").click()
    enrolled = wait.until(ec.visibility_of_element_located((By.ID, "enroll-result")))
    assert "Enrolled demo-person: 2 photo(s)" in enrolled.text
    find(By.ID, "identify-image").send_keys(str(DEEPFACE / "img4.jpg"))
    find(By.ID, "identify-run").click()
    wait.until(ec.visibility_of_element_located((By.ID, "identify-result")))
    assert find(By.ID, "identify-candidates").text.startswith("demo-person: score")
    _screenshot(driver, tmp_path, "enrol-identify")
    find(By.ID, "delete-user").send_keys("demo-person")
    find(By.ID, "delete-run").click()
    deleted = wait.until(ec.visibility_of_element_located((By.ID, "delete-result")))
    assert deleted.text.startswith("Deleted demo-person:")
    find(By.ID, "delete-run").click()  # again: the user is gone
    gone = wait.until(ec.visibility_of_element_located((By.ID, "delete-error")))
    assert gone.find_element(By.CLASS_NAME, "title").text == "User not found"

    # Nothing on the page was blocked by its own policy (a violation is logged to the console).
    console = [entry["message"] for entry in driver.get_log("browser")]
    assert not [m for m in console if "Content Security Policy" in m], console
