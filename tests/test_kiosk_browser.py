"""The kiosk page in a real headless Chromium against a real waitress server, pipeline and int8 model.

Drives the screens a patient or health worker uses (preview -> capture -> result -> language -> chat ->
report -> New patient), keyboard-only use, uploads with bad files, the uploads-only device and the history.
Screenshots of every screen go to test-artifacts/kiosk/ (at 1280x800 and 800x480) for a person to look at.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import flask
import pytest
from conftest import PRETRAINED
from selenium import webdriver  # a dev dependency: setup.sh --dev installs it
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from test_kiosk_api import build_kiosk, no_edge_environment

from edge.inference.manifest import DecisionSpec, load_pack, write_pack
from edge.kiosk import i18n
from edge.kiosk.app import create_app
from edge.paths import PROJECT_ROOT
from edge.pipeline import Pipeline
from edge.screening import PipelineScreening

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "kiosk"
BIG, SMALL = (1280, 800), (800, 480)


# -- servers and browser -----------------------------------------------------------------------------------
class Server:
    """The product's kiosk server (edge.kiosk.server) on a free port, with the URL the browser opens."""

    def __init__(self, app) -> None:
        from edge.kiosk.server import KioskServer

        self.server = KioskServer(app, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.port}"
        self.server.start()

    def status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def close(self) -> None:
        # The page still open in the module's browser keeps polling this server: close must end that cleanly.
        assert self.server.close(), "the kiosk server left threads running"


@pytest.fixture(scope="module")
def server(kiosk):
    running = Server(kiosk.app)
    yield running
    running.close()


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(f"need {CHROMIUM} and {CHROMEDRIVER} (apt install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.TemporaryDirectory(prefix="kiosk-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-extensions", "--lang=en-GB", f"--user-data-dir={profile.name}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()
    profile.cleanup()


@pytest.fixture
def page(browser, server):
    """A fresh kiosk page at 1280x800; at the end, no script error or CSP violation was logged."""
    viewport(browser, *BIG)
    browser.get(server.url + "/")
    wait(browser, lambda d: d.execute_script("return Boolean(window.kiosk)"))
    yield browser
    problems = [entry for entry in browser.get_log("browser")
                if entry["level"] == "SEVERE" and entry.get("source") in ("javascript", "security")]
    assert not problems, problems


def viewport(driver, width, height) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def wait(driver, condition, timeout=15):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def shot(driver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def visible(driver, element_id: str) -> bool:
    return js(driver, "const e = document.getElementById(arguments[0]); return Boolean(e) && e.offsetParent !== null "
                      "&& getComputedStyle(e).visibility !== 'hidden'", element_id)


def text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text.strip()


def on_result_screen(driver) -> bool:
    return visible(driver, "screen-result") and not visible(driver, "screen-preview")


def preview_live(driver) -> bool:
    return js(driver, "const f = document.getElementById('preview-frame'), i = document.getElementById('preview-img');"
                      "return ['ok', 'bad'].includes(f.dataset.state) && i.complete && i.naturalWidth > 0")


def saliency_loaded(driver) -> bool:
    return js(driver, "const i = document.getElementById('saliency-img'); return i.complete && i.naturalWidth > 0")


def capture_result(driver) -> dict:
    wait(driver, preview_live)
    driver.find_element(By.ID, "capture").click()
    wait(driver, on_result_screen)
    return js(driver, "return window.kiosk.state.result")


def upload_file(driver, path: Path) -> None:
    driver.find_element(By.ID, "upload-input").send_keys(str(path))


def assert_layout_fits(driver) -> None:
    """No sideways scrolling; touch targets and type big enough; nothing important cut off."""
    metrics = js(driver, """
        const buttons = [...document.querySelectorAll('button, a.btn')].filter(b => b.offsetParent !== null);
        return {
          overflow: document.documentElement.scrollWidth - innerWidth,
          bodyFont: parseFloat(getComputedStyle(document.body).fontSize),
          smallButtons: buttons.filter(b => b.getBoundingClientRect().height < 56).map(b => b.id || b.textContent),
          footerBottom: document.querySelector('footer').getBoundingClientRect().bottom,
          height: innerHeight,
        };""")
    assert metrics["overflow"] <= 0, metrics
    assert metrics["bodyFont"] >= 20, metrics
    assert not metrics["smallButtons"], metrics
    assert abs(metrics["footerBottom"] - metrics["height"]) < 1, metrics  # the disclaimer is always on screen


def urgency_of(driver) -> str:
    return driver.find_element(By.ID, "urgency-badge").get_attribute("data-urgency")


def fully_on_screen(driver, element_id: str) -> bool:
    return js(driver, """const r = document.getElementById(arguments[0]).getBoundingClientRect();
        const bar = document.querySelector('.action-bar').getBoundingClientRect();
        const footer = document.querySelector('footer').getBoundingClientRect();
        const limit = document.getElementById('screen-result').hidden ? footer.top : bar.top;
        return r.height > 0 && r.top >= 0 && r.bottom <= limit + 0.5 && r.left >= 0 && r.right <= innerWidth + 0.5""",
              element_id)


# -- the patient's way through -----------------------------------------------------------------------------
def test_preview_capture_result_language_chat_report_new_patient(page, server, kiosk):
    driver = page
    wait(driver, preview_live)
    assert text(driver, "guidance")
    assert visible(driver, "capture") and visible(driver, "upload")
    assert text(driver, "capture") == i18n.text("en", "action.capture")
    assert i18n.text("en", "app.disclaimer") in driver.find_element(By.TAG_NAME, "footer").text
    assert_layout_fits(driver)
    shot(driver, "preview-1280x800")

    result = capture_result(driver)
    assert result["id"] and result["display_name"]
    assert text(driver, "result-name") == result["display_name"]
    assert text(driver, "name-kicker") == i18n.text("en", "result.most_likely")
    badge = driver.find_element(By.ID, "urgency-badge")
    assert badge.get_attribute("data-urgency") == result["urgency"]
    assert text(driver, "urgency-text") == i18n.text("en", f"urgency.{result['urgency']}")
    assert text(driver, "next-step") == i18n.text("en", f"next.{result['urgency']}")
    bars = driver.find_elements(By.CSS_SELECTOR, "#bars li")
    assert len(bars) == 8  # 1001 ImageNet labels: the top 7 and "all other kinds"
    values = [float(bar.find_element(By.CLASS_NAME, "bar-value").text.strip("%< ")) for bar in bars[:-1]]
    assert values == sorted(values, reverse=True) and all(0 <= v <= 100 for v in values)
    assert "%" in bars[0].text and bars[0].get_attribute("data-label") == result["label"]
    assert str(round(result["confidence"] * 100)) in text(driver, "confidence-text")
    assert not visible(driver, "unsure-banner") or result["abstained"]
    wait(driver, saliency_loaded)
    assert js(driver, "return document.activeElement.id") == "result-title"
    assert_layout_fits(driver)
    shot(driver, "result-1280x800")

    # symptoms raise the badge, with the reasons shown
    driver.find_element(By.CSS_SELECTOR, '#symptoms input[value="bleeding"]').click()
    wait(driver, lambda d: visible(d, "symptom-reasons"))
    assert badge.get_attribute("data-urgency") in ("soon", "urgent")
    raised = badge.get_attribute("data-urgency")

    # another language: every string on screen follows, the result stays
    driver.find_element(By.CSS_SELECTOR, '[data-lang-choice="es"]').click()
    wait(driver, lambda d: text(d, "new-patient") == i18n.text("es", "action.new_patient"))
    assert js(driver, "return document.documentElement.lang") == "es"
    assert text(driver, "urgency-text") == i18n.text("es", f"urgency.{raised}")
    assert text(driver, "name-kicker") == i18n.text("es", "result.most_likely")
    assert i18n.text("es", "app.disclaimer") in driver.find_element(By.TAG_NAME, "footer").text
    assert driver.find_element(By.CSS_SELECTOR, '[data-lang-choice="es"]').get_attribute("aria-pressed") == "true"
    wait(driver, lambda d: "?lang=es" in d.current_url)

    # no assistant on this device: a polite 409 message, in Spanish
    chat = driver.find_element(By.ID, "chat-input")
    chat.send_keys("¿Qué significa esto?", Keys.ENTER)
    wait(driver, lambda d: visible(d, "chat-notice"))
    assert text(driver, "chat-notice") == i18n.text("es", "chat.disabled")
    assert not visible(driver, "chat-form")
    js(driver, "document.querySelector('.result-scroll').scrollTop = 0")
    shot(driver, "result-es-1280x800")

    # the report needs the assistant too: the overlay says so instead of showing raw JSON
    driver.find_element(By.ID, "report-open").click()
    wait(driver, lambda d: visible(d, "report-error"))
    assert i18n.text("es", "report.unavailable") in text(driver, "report-error")
    assert not visible(driver, "report-frame") and not visible(driver, "report-print")
    shot(driver, "report-unavailable-1280x800")
    driver.find_element(By.ID, "report-close").click()
    wait(driver, lambda d: not js(d, "return document.getElementById('report-dialog').open"))

    # New patient: the page forgets everything, and so does the server
    assert server.status(result["saliency_url"]) == 200
    driver.find_element(By.ID, "new-patient").click()
    wait(driver, lambda d: visible(d, "screen-preview"))
    assert js(driver, "return window.kiosk.state.result") is None
    for element_id in ("result-name", "urgency-text", "next-step", "confidence-text", "bars", "chat-log"):
        assert js(driver, "return document.getElementById(arguments[0]).textContent", element_id) == ""
    assert js(driver, "return [...document.querySelectorAll('#symptoms input')].some(b => b.checked)") is False
    assert js(driver, "return document.getElementById('saliency-img').getAttribute('src')") is None
    assert not js(driver, "return document.getElementById('redflag').hidden === false")
    wait(driver, lambda d: server.status(result["saliency_url"]) == 404)
    wait(driver, preview_live)
    assert js(driver, "return document.activeElement.id") == "capture"
    assert text(driver, "capture") == i18n.text("es", "action.capture")  # the language choice stays
    shot(driver, "preview-es-1280x800")


def test_keyboard_only(page):
    driver = page
    wait(driver, preview_live)
    body = driver.find_element(By.TAG_NAME, "body")
    body.click()
    for _ in range(12):
        driver.switch_to.active_element.send_keys(Keys.TAB)
        if js(driver, "return document.activeElement.id") == "capture":
            break
    assert js(driver, "return document.activeElement.id") == "capture"
    outline = js(driver, "return getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # focus is visible
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    wait(driver, on_result_screen)
    for _ in range(30):
        driver.switch_to.active_element.send_keys(Keys.TAB)
        if js(driver, "return document.activeElement.id") == "new-patient":
            break
    assert js(driver, "return document.activeElement.id") == "new-patient"
    driver.switch_to.active_element.send_keys(Keys.SPACE)
    wait(driver, lambda d: visible(d, "screen-preview"))
    assert js(driver, "return document.activeElement.id") == "capture"


def test_an_unattended_result_clears_itself(page, server):
    driver = page
    result = capture_result(driver)
    js(driver, "window.kiosk.state.idleTimeoutMs = 300; window.kiosk.state.lastActivity = 0")  # kiosk.idle_timeout_s
    wait(driver, lambda d: visible(d, "screen-preview"))
    assert js(driver, "return window.kiosk.state.result") is None and text(driver, "result-name") == ""
    wait(driver, lambda d: server.status(result["saliency_url"]) == 404)


def test_an_answer_that_stalls_does_not_keep_a_result_on_screen(page, server):
    """A chat stream that stops mid-answer (a dropped link, a hung proxy) used to block the idle reset for
    good: the previous patient's result and chat stayed for the next one."""
    driver = page
    capture_result(driver)
    js(driver, "window.kiosk.state.chatBusy = true")  # what a stream that never ends leaves behind
    js(driver, "window.kiosk.state.idleTimeoutMs = 300; window.kiosk.state.lastActivity = 0")
    wait(driver, lambda d: visible(d, "screen-preview"))
    assert js(driver, "return window.kiosk.state.result") is None
    js(driver, "window.kiosk.state.idleTimeoutMs = 180000; window.kiosk.state.lastActivity = Date.now()")


def test_a_report_that_cannot_be_reached_says_so_and_offers_no_print(page, server):
    """With the daemon out of reach the frame holds the browser's own (English, cross-origin) error page:
    it must not be shown with a working Print button."""
    driver = page
    capture_result(driver)
    driver.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
    try:
        driver.find_element(By.ID, "report-open").click()
        wait(driver, lambda d: visible(d, "report-error"))
        assert not visible(driver, "report-frame") and not visible(driver, "report-print")
    finally:
        driver.delete_network_conditions()
    driver.find_element(By.ID, "report-close").click()
    driver.find_element(By.ID, "new-patient").click()
    wait(driver, lambda d: visible(d, "screen-preview"))


@contextlib.contextmanager
def short_session_timeout(driver, kiosk, idle_timeout_s: float, heartbeat_ms: int):
    """The server's idle timeout and the page's keep-alive interval shortened for a test, then restored;
    afterwards the page starts a new patient."""
    sessions = kiosk.sessions
    configured = sessions.idle_timeout_s
    try:
        sessions.idle_timeout_s = idle_timeout_s
        js(driver, f"window.kiosk.state.heartbeatMs = {heartbeat_ms}")
        yield
    finally:
        sessions.idle_timeout_s = configured
        js(driver, "window.kiosk.state.heartbeatMs = 30000")
    driver.find_element(By.ID, "new-patient").click()
    wait(driver, lambda d: visible(d, "screen-preview"))


SCROLL = "document.querySelector('.result-scroll').dispatchEvent(new Event('scroll'))"


def test_reading_a_result_keeps_the_session_on_the_server(page, server, kiosk):
    """Scrolling and keys on the result screen call no API of their own: the page's keep-alive must stop the
    server expiring the session of someone who is still reading."""
    driver = page
    result = capture_result(driver)
    with short_session_timeout(driver, kiosk, 1.0, 200):
        for _ in range(10):  # 2.5 s of reading: scroll events only
            js(driver, SCROLL)
            time.sleep(0.25)
        assert server.status(result["saliency_url"]) == 200


def test_activity_between_keep_alives_is_still_reported(page, server, kiosk):
    """Keep-alives go at most once per heartbeat; activity inside that window used to be dropped, so the
    server could expire a session up to a heartbeat before the page's own idle timer."""
    driver = page
    result = capture_result(driver)
    with short_session_timeout(driver, kiosk, 4.0, 2000):
        js(driver, "window.kiosk.state.lastHeartbeat = 0")
        started = time.monotonic()
        js(driver, SCROLL)  # sent at once
        time.sleep(1.2)
        js(driver, SCROLL)  # inside the heartbeat: must still reach the server, 2 s after the first
        time.sleep(max(0.0, 4.8 - (time.monotonic() - started)))
        # the old page's last keep-alive was at 0 s (expired at 4 s); now it is at 2 s (expires at 6 s)
        assert server.status(result["saliency_url"]) == 200


def test_a_session_cleared_on_the_server_clears_the_screen(page, server, kiosk):
    """An administrator's purge (or a restart) clears the server's session; the page ignored the keep-alive's
    "no longer active" and kept the last patient's result and chat on screen while anyone touched it."""
    driver = page
    capture_result(driver)
    js(driver, "window.kiosk.state.heartbeatMs = 200")
    try:
        kiosk.sessions.new_patient()  # what purge_local_data does
        js(driver, SCROLL)
        wait(driver, lambda d: visible(d, "screen-preview"), timeout=10)
        assert text(driver, "result-name") == ""
    finally:
        js(driver, "window.kiosk.state.heartbeatMs = 30000")


def test_the_history_panel_does_not_outlast_its_user(page, server):
    """Health-worker mode: History left open on an unattended kiosk closes, and so it does on New patient."""
    driver = page
    capture_result(driver)
    driver.find_element(By.ID, "history-open").click()
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history-list li")) >= 1)
    js(driver, "window.kiosk.state.idleTimeoutMs = 300; window.kiosk.state.lastActivity = 0")
    wait(driver, lambda d: not js(d, "return document.getElementById('history-dialog').open"))
    assert js(driver, "return document.querySelectorAll('#history-list li').length") == 0
    assert visible(driver, "screen-preview")
    js(driver, "window.kiosk.state.idleTimeoutMs = 180000; window.kiosk.state.lastActivity = Date.now()")


def test_uploads_retake_and_bad_files(page, tmp_path, ham_images):
    driver = page
    viewport(driver, *SMALL)
    wait(driver, preview_live)
    upload_file(driver, PRETRAINED / "cat.bmp")
    wait(driver, lambda d: visible(d, "retake"))
    assert text(driver, "retake").splitlines() == [i18n.text("en", "retake.title"), i18n.text("en", "quality.not_skin")]
    assert visible(driver, "screen-preview")
    assert fully_on_screen(driver, "capture") and fully_on_screen(driver, "upload")  # messages never push them off
    assert_layout_fits(driver)
    shot(driver, "retake-800x480")

    driver.find_element(By.CSS_SELECTOR, '[data-lang-choice="fr"]').click()  # the guidance follows the language
    wait(driver, lambda d: i18n.text("fr", "quality.not_skin") in text(d, "retake"))
    driver.find_element(By.CSS_SELECTOR, '[data-lang-choice="en"]').click()
    wait(driver, lambda d: i18n.text("en", "quality.not_skin") in text(d, "retake"))

    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("this is not a photo\n" * 20)
    upload_file(driver, not_an_image)
    wait(driver, lambda d: visible(d, "preview-error"))
    assert not visible(driver, "retake")
    assert text(driver, "preview-error").startswith(i18n.text("en", "error.unreadable"))
    assert "not an image" in text(driver, "preview-error")
    # the server's reason is English: a patient who chose Spanish gets the translated message alone, a
    # health worker gets the reason too
    driver.find_element(By.CSS_SELECTOR, '[data-lang-choice="es"]').click()
    for health_worker in (False, True):
        js(driver, f"window.kiosk.state.healthWorker = {str(health_worker).lower()};"
                   "document.getElementById('preview-error').hidden = true")
        upload_file(driver, not_an_image)
        wait(driver, lambda d: visible(d, "preview-error"))
        assert text(driver, "preview-error").startswith(i18n.text("es", "error.unreadable"))
        assert ("not an image" in text(driver, "preview-error")) is health_worker
    js(driver, "window.kiosk.state.healthWorker = document.body.dataset.healthWorker === 'true'")
    driver.find_element(By.CSS_SELECTOR, '[data-lang-choice="en"]').click()

    upload_file(driver, ham_images[4])
    wait(driver, on_result_screen)
    wait(driver, saliency_loaded)
    assert not visible(driver, "preview-error")
    # on a 800x480 panel the answer and its urgency are visible without scrolling, and so is New patient
    assert fully_on_screen(driver, "result-name") and fully_on_screen(driver, "urgency-badge")
    assert js(driver, "const r = document.getElementById('new-patient').getBoundingClientRect();"
                      "return r.bottom <= innerHeight && r.top >= 0")
    assert_layout_fits(driver)
    shot(driver, "result-800x480")
    for lang in ("fr", "es"):  # the longest translated name (three lines in French) must not push it down
        driver.find_element(By.CSS_SELECTOR, f'[data-lang-choice="{lang}"]').click()
        wait(driver, lambda d, lang=lang: text(d, "urgency-text") == i18n.text(lang, f"urgency.{urgency_of(d)}"))
        longest = max((i18n.text(lang, f"label.{label}") for label in ("akiec", "bcc", "bkl", "df", "mel", "nv",
                                                                        "vasc")), key=len)
        js(driver, "document.getElementById('result-name').textContent = arguments[0]", longest)
        assert fully_on_screen(driver, "urgency-badge"), lang
        shot(driver, f"result-{lang}-longest-name-800x480")
    driver.find_element(By.CSS_SELECTOR, '[data-lang-choice="en"]').click()
    js(driver, "document.querySelector('.result-scroll').scrollTop = 1e6")
    shot(driver, "result-scrolled-800x480")
    driver.find_element(By.ID, "new-patient").click()
    wait(driver, lambda d: visible(d, "screen-preview"))
    assert not visible(driver, "retake") and not visible(driver, "preview-error")
    assert_layout_fits(driver)
    shot(driver, "preview-800x480")


def test_history_panel(page, server, kiosk):
    driver = page
    viewport(driver, *SMALL)
    urllib.request.urlopen(urllib.request.Request(server.url + "/api/history/purge", method="POST"), timeout=10)
    capture_result(driver)
    assert not visible(driver, "history-unsaved")
    driver.find_element(By.ID, "history-open").click()
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history-list li")) == 1)
    entry = driver.find_element(By.CSS_SELECTOR, "#history-list li")
    assert js(driver, "return window.kiosk.state.result.display_name") in entry.text
    assert driver.find_element(By.ID, "history-csv").get_attribute("href").endswith("/api/history.csv")
    note = entry.find_element(By.CSS_SELECTOR, "input[type=text]")
    note.send_keys("referred to clinic", Keys.ENTER)
    saved = i18n.text("en", "history.note_saved")
    wait(driver, lambda d: entry.find_element(By.CSS_SELECTOR, "[role=status]").text == saved)
    with urllib.request.urlopen(server.url + "/api/history", timeout=10) as response:
        assert json.load(response)["entries"][0]["note"] == "referred to clinic"
    shot(driver, "history-800x480")

    driver.find_element(By.ID, "history-purge").click()
    wait(driver, lambda d: visible(d, "confirm-text"))
    assert text(driver, "confirm-text") == i18n.text("en", "history.purge_confirm").replace("{n}", "1")
    assert js(driver, "return document.activeElement.id") == "confirm-cancel"  # the safe choice is the default
    shot(driver, "history-purge-confirm-800x480")
    driver.find_element(By.ID, "confirm-ok").click()
    wait(driver, lambda d: visible(d, "history-empty"))
    assert text(driver, "history-status") == i18n.text("en", "history.purged").replace("{n}", "1")
    driver.find_element(By.ID, "history-close").click()
    driver.find_element(By.ID, "new-patient").click()
    wait(driver, lambda d: visible(d, "screen-preview"))

    # storage that stops taking writes (a read-only SD card): the result is shown, with a note to write it down
    kiosk.history._db.execute("PRAGMA query_only = 1")
    try:
        capture_result(driver)
    finally:
        kiosk.history._db.execute("PRAGMA query_only = 0")
    assert visible(driver, "history-unsaved") and visible(driver, "urgency-badge")
    assert text(driver, "history-unsaved") == i18n.text("en", "history.unsaved")
    assert_layout_fits(driver)
    shot(driver, "history-unsaved-800x480")
    driver.find_element(By.ID, "new-patient").click()
    wait(driver, lambda d: visible(d, "screen-preview"))


@pytest.fixture(scope="module")
def unsure_pack(tmp_path_factory, imagenet_pack) -> Path:
    """The ImageNet pack with an operating point no answer reaches: every result abstains ("unsure")."""
    out = tmp_path_factory.mktemp("packs") / "imagenet-unsure"
    pack = load_pack(imagenet_pack)
    write_pack(out, model_files={"cpu": imagenet_pack / "model.tflite"}, labels=list(pack.manifest.labels),
               name="imagenet-unsure", version="1", licence="Apache-2.0", input_spec=pack.manifest.input,
               decision=DecisionSpec(abstain_below=0.999))
    return out


def test_uploads_only_device_and_the_unsure_state(browser, kiosk, unsure_pack, ham_images):
    settings = kiosk.settings.model_copy(update={
        "camera": kiosk.settings.camera.model_copy(update={"source": "none"}),
        "inference": kiosk.settings.inference.model_copy(update={"model_dir": unsure_pack})})
    pipeline = Pipeline.from_settings(settings)
    server = Server(create_app(PipelineScreening(pipeline), settings))
    try:
        for size in (SMALL, BIG):
            viewport(browser, *size)
            browser.get(server.url + "/?lang=fr")
            wait(browser, lambda d: visible(d, "no-camera"))
            assert text(browser, "no-camera") == i18n.text("fr", "preview.no_camera")
            assert not visible(browser, "capture") and visible(browser, "upload")
            assert js(browser, "return document.getElementById('preview-img').getAttribute('src')") is None
            assert_layout_fits(browser)
            shot(browser, f"no-camera-{size[0]}x{size[1]}")

            upload_file(browser, ham_images[5])
            wait(browser, on_result_screen)
            wait(browser, saliency_loaded)
            result = js(browser, "return window.kiosk.state.result")
            assert result["abstained"] is True and result["urgency"] == "unsure"
            assert visible(browser, "unsure-banner") and fully_on_screen(browser, "unsure-banner")
            assert text(browser, "unsure-banner").splitlines() == [i18n.text("fr", "result.unsure_title"),
                                                                   i18n.text("fr", "abstain.low_confidence")]
            assert text(browser, "name-kicker") == i18n.text("fr", "result.closest")
            assert browser.find_element(By.ID, "urgency-badge").get_attribute("data-urgency") == "unsure"
            assert not visible(browser, "urgency-badge")  # the banner says it already
            assert text(browser, "next-step") == i18n.text("fr", "next.unsure")
            assert_layout_fits(browser)
            shot(browser, f"result-unsure-{size[0]}x{size[1]}")
            # a symptom that sets a time frame brings the badge back (the model being unsure does not lower it)
            browser.find_element(By.CSS_SELECTOR, '#symptoms input[value="recent_change"]').click()
            wait(browser, lambda d: visible(d, "urgency-badge"))
            assert browser.find_element(By.ID, "urgency-badge").get_attribute("data-urgency") == "soon"
            assert visible(browser, "unsure-banner")
            browser.find_element(By.ID, "new-patient").click()
            wait(browser, lambda d: visible(d, "screen-preview"))
            assert js(browser, "return document.activeElement.id") == "upload"
    finally:
        server.close()
        pipeline.close()


def test_assistant_chat_streams_and_red_flags_raise_the_badge(browser, kiosk):
    from edge.assistant import service

    # The real assistant without its language model (as on a device where the GGUF is missing): red flags,
    # notices and fallback answers still stream as server-sent events.
    assistant = service.Assistant(kiosk.settings, None, None, "no language model in this test")
    server = Server(create_app(kiosk.screening, kiosk.settings, assistant=assistant, history=kiosk.history))
    try:
        viewport(browser, *BIG)
        browser.get(server.url + "/")
        result = capture_result(browser)
        chat = browser.find_element(By.ID, "chat-input")
        chat.send_keys("What does this result mean?", Keys.ENTER)
        wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chat-log .bubble-assistant .bubble-note")) == 1)
        wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, "#chat-log [aria-busy=true]"))
        answer = browser.find_elements(By.CSS_SELECTOR, "#chat-log .bubble-assistant")[-1]
        assert answer.find_element(By.CLASS_NAME, "bubble-text").text.strip()
        assert "is-error" not in answer.get_attribute("class")
        assert browser.find_element(By.ID, "urgency-badge").get_attribute("data-urgency") == result["urgency"]

        chat.send_keys("It has been bleeding a lot since yesterday", Keys.ENTER)
        wait(browser, lambda d: visible(d, "redflag"))
        assert browser.find_element(By.ID, "urgency-badge").get_attribute("data-urgency") == "urgent"
        assert text(browser, "urgency-text") == i18n.text("en", "urgency.urgent")
        assert browser.find_elements(By.CSS_SELECTOR, "#chat-log .bubble.is-redflag")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#chat-log .bubble")) == 4
        wait(browser, saliency_loaded)
        shot(browser, "chat-redflag-1280x800")
        # the banner follows a language switch (its fixed text, not the chat log)
        from edge.assistant.redflags import urgent_message

        browser.find_element(By.CSS_SELECTOR, '[data-lang-choice="es"]').click()
        wait(browser, lambda d: text(d, "redflag-text") == urgent_message("es", ["bleeding"]).strip())
        browser.find_element(By.CSS_SELECTOR, '[data-lang-choice="en"]').click()
        wait(browser, lambda d: text(d, "redflag-text") == urgent_message("en", ["bleeding"]).strip())
        # a second warning adds to the first: the banner names both, in any language
        chat.send_keys("I also found a new lump in my armpit", Keys.ENTER)
        both = ["bleeding", "new_lump"]
        wait(browser, lambda d: text(d, "redflag-text") == urgent_message("en", both).strip())
        browser.find_element(By.CSS_SELECTOR, '[data-lang-choice="fr"]').click()
        wait(browser, lambda d: text(d, "redflag-text") == urgent_message("fr", both).strip())
        browser.find_element(By.CSS_SELECTOR, '[data-lang-choice="en"]').click()
        wait(browser, lambda d: text(d, "redflag-text") == urgent_message("en", both).strip())

        browser.find_element(By.ID, "new-patient").click()
        wait(browser, lambda d: visible(d, "screen-preview"))
        assert not browser.find_elements(By.CSS_SELECTOR, "#chat-log .bubble")
        capture_result(browser)
        assert not visible(browser, "redflag")
        assert browser.find_element(By.ID, "urgency-badge").get_attribute("data-urgency") != "urgent" or \
            js(browser, "return window.kiosk.state.result.urgency") == "urgent"
        browser.find_element(By.ID, "new-patient").click()
    finally:
        server.close()


def test_full_flow_with_the_skin_model_and_the_real_llm(browser, tmp_path_factory, ham_images):
    """The device as shipped: the default skin pack, the embedded GGUF streaming a grounded answer, the report
    (overview by the LLM or templates, with its source stated), and New patient clearing it all."""
    from edge.assistant.service import build_assistant
    from edge.paths import default_model_dir

    with no_edge_environment():
        kiosk = build_kiosk(tmp_path_factory.mktemp("kiosk-llm"), default_model_dir(), ham_images)
    assistant = build_assistant(kiosk.settings, load_pack(default_model_dir()))
    assert assistant.llm is not None, assistant.llm_error
    app = create_app(kiosk.screening, kiosk.settings, assistant=assistant, history=kiosk.history)
    slow_reports = threading.Event()  # set: each report takes a second longer, like a model on a slow device

    @app.before_request
    def _slow_report():
        if slow_reports.is_set() and flask.request.path.startswith("/api/report/"):
            time.sleep(1.0)

    server = Server(app)
    try:
        viewport(browser, *BIG)
        browser.get(server.url + "/")
        wait(browser, preview_live)
        shot(browser, "skin-preview-1280x800")
        result = capture_result(browser)
        assert result["label"] in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#bars li")) == 7
        wait(browser, saliency_loaded)
        shot(browser, "skin-result-1280x800")

        # the answer streams in: several updates of the bubble before the stream ends
        lengths = js(browser, """
            window.__lengths = [];
            const log = document.getElementById('chat-log');
            new MutationObserver(() => {
              const b = [...log.querySelectorAll('.bubble-assistant .bubble-text')].pop();
              if (b) window.__lengths.push(b.textContent.length);
            }).observe(log, {subtree: true, childList: true, characterData: true});
            return window.__lengths;""")
        browser.find_element(By.ID, "chat-input").send_keys("What does this result mean for me?", Keys.ENTER)
        wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, "#chat-log [aria-busy=true]")
             and d.find_elements(By.CSS_SELECTOR, "#chat-log .bubble-assistant"), timeout=90)
        lengths = js(browser, "return window.__lengths")
        answer = browser.find_elements(By.CSS_SELECTOR, "#chat-log .bubble-assistant .bubble-text")[-1].text
        assert answer.strip()
        assert len(set(lengths)) >= 2, lengths  # streamed, not delivered at once
        shot(browser, "skin-chat-1280x800")

        browser.find_element(By.ID, "report-open").click()
        wait(browser, lambda d: visible(d, "report-frame"), timeout=90)
        browser.switch_to.frame(browser.find_element(By.ID, "report-frame"))
        body = browser.find_element(By.TAG_NAME, "body").text
        browser.switch_to.default_content()
        for title in ("Condition Overview", "Confidence Meaning", "Recommended Actions", "Disclaimers"):
            assert title.lower() in body.lower(), title
        shot(browser, "skin-report-1280x800")
        js(browser, "document.getElementById('report-frame').contentDocument.body.dataset.first = 'yes'")
        browser.find_element(By.ID, "report-close").click()

        # two symptoms ticked in quick succession, then the report again: the earlier report is never shown
        # while the new one is written, and the new one has the tier both symptoms together call for
        for symptom in ("bleeding", "recent_change"):
            browser.find_element(By.CSS_SELECTOR, f'#symptoms input[value="{symptom}"]').click()
        slow_reports.set()
        browser.find_element(By.ID, "report-open").click()
        # right after the click the frame is either hidden behind "Preparing the report" or already shows the
        # new report (a reopened report reuses its overview, so it can be that fast): never the earlier one
        shown = js(browser, """const f = document.getElementById('report-frame');
            const body = f.contentDocument && f.contentDocument.body;
            return f.hidden ? (document.getElementById('report-loading').hidden ? 'nothing' : 'loading')
                            : (body && body.dataset.first === 'yes' ? 'old report' : 'new report');""")
        assert shown in ("loading", "new report"), shown
        wait(browser, lambda d: visible(d, "report-frame"), timeout=90)
        browser.switch_to.frame(browser.find_element(By.ID, "report-frame"))
        body = browser.find_element(By.TAG_NAME, "body").text
        browser.switch_to.default_content()
        assert "urgent referral" in body, body[:500]
        browser.find_element(By.ID, "report-close").click()

        browser.find_element(By.ID, "new-patient").click()
        wait(browser, lambda d: visible(d, "screen-preview"))
        assert not browser.find_elements(By.CSS_SELECTOR, "#chat-log .bubble")
        wait(browser, lambda d: server.status(result["saliency_url"]) == 404)
        # nor does the model keep the last patient's words in its context (KV cache and token buffer)
        llm = assistant.llm._llm

        def remembered() -> str:
            return llm.detokenize([int(t) for t in llm.input_ids if t]).decode("utf-8", "replace")

        wait(browser, lambda d: result["display_name"] not in remembered(), timeout=60)
    finally:
        server.close()
        assistant.close()
        kiosk.close()
