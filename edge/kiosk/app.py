"""The kiosk's Flask app factory: the JSON API the page itself uses, served locally by waitress.

Every error is JSON with a 4xx status and one message a person can act on; the server keeps serving.
The app holds no module-level state: everything lives on the objects passed to ``create_app``.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import socket
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from flask import Flask, Request, Response, jsonify, render_template, request, stream_with_context
from werkzeug.exceptions import HTTPException

from edge import __version__
from edge.errors import CameraUnavailable, EdgeError, ImageError, ModelError
from edge.kiosk import i18n, metrics
from edge.kiosk.ports import NotFound, RetakeNeeded, Screening
from edge.kiosk.session import SessionKeeper

log = logging.getLogger("edge.kiosk")
HERE = Path(__file__).parent
MJPEG_BOUNDARY = "frame"
MJPEG_IDLE_S = 5.0  # no new frame for this long ends a stream


class ApiError(EdgeError):
    def __init__(self, status: int, message: str, **extra) -> None:
        super().__init__(message)
        self.status, self.extra = status, extra


JSON_BODY_LIMIT = 64 * 1024  # every request but an upload is a small JSON document (chat: max_chat_chars)


def _from_this_device(address: str | None) -> bool:
    try:
        return ipaddress.ip_address((address or "").split("%")[0]).is_loopback
    except ValueError:  # a Unix socket or no address: not a network client
        return address in (None, "")


def local_host_names(listen_host: str, extra: list[str]) -> frozenset[str]:
    """The names this kiosk answers to besides IP addresses: localhost, the machine's name (and .local, as
    mDNS announces it), the configured listen host and ``kiosk.allowed_hosts``."""
    name = socket.gethostname().lower()
    names = {"localhost", name, f"{name}.local", *(host.lower() for host in extra)}
    if listen_host not in ("", "0.0.0.0", "::"):
        names.add(listen_host.lower())
    return frozenset(names)


def host_allowed(host_header: str, names: frozenset[str]) -> bool:
    """Whether a request's Host (with or without a port; IPv6 in brackets) is an IP address or a known name."""
    host = host_header.lower()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":")[0]
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host in names


class InMemoryRequest(Request):
    """Uploaded files stay in memory. Werkzeug spools any part over 500 kB to a temporary file on disk,
    and a patient's photo must never be written there (MAX_CONTENT_LENGTH bounds the memory)."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def close_app(app: Flask) -> None:
    """Stop what the app runs by itself (the session expiry timer); the server is closed first."""
    app.extensions["edge"]["sessions"].close()


def create_app(screening: Screening, settings, *, assistant=None, history=None, mqtt=None) -> Flask:
    """``settings`` is the full ``Settings``; ``assistant``, ``history`` and ``mqtt`` (anything with a
    ``health()`` dict) are optional services."""
    kiosk = settings.kiosk
    app = Flask(__name__, template_folder=str(HERE / "templates"), static_folder=str(HERE / "static"))
    app.request_class = InMemoryRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.limits.max_bytes + 64 * 1024
    def clear_patient(result_ids: list[str]) -> None:
        screening.forget(result_ids)
        if assistant is not None:
            assistant.forget()

    sessions = SessionKeeper(kiosk.idle_timeout_s, clear_patient)

    known_hosts = local_host_names(kiosk.host, kiosk.allowed_hosts)

    @app.before_request
    def _only_this_kiosk():
        """Refuse what a web page elsewhere could make a browser send here. A Host this device is not known by
        is a DNS-rebinding page trying to read the API as if it were the kiosk; a state-changing request from
        another site (an Origin that is not this one, or Sec-Fetch-Site: cross-site) could purge the
        history, take a capture or clear the patient's session. JSON bodies are small: only an upload may
        be large, so a huge JSON document cannot take the device's memory."""
        if request.path != "/health" and not host_allowed(request.host, known_hosts):  # /health: probes, curl
            raise ApiError(400, f"this kiosk does not answer to the host name {request.host.split(':')[0]!r} "
                           "(add it to kiosk.allowed_hosts)")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin")
            if (origin and urllib.parse.urlsplit(origin).netloc != request.host) or \
                    request.headers.get("Sec-Fetch-Site") == "cross-site":
                raise ApiError(403, "requests from other web sites are refused")
        if request.path != "/api/classify":
            request.max_content_length = JSON_BODY_LIMIT
            if (request.content_length or 0) > JSON_BODY_LIMIT:
                raise ApiError(413, f"request body above {JSON_BODY_LIMIT // 1024} kB")

    def json_body():
        """The request's JSON, or None when it is missing or malformed (including nesting too deep to parse)."""
        try:
            return request.get_json(silent=True)
        except RecursionError:
            return None

    @app.after_request
    def _never_cached(response: Response) -> Response:
        """No API answer (a result, a saliency map, a report, a chat stream, the history and its notes) may
        stay in a browser's cache: every response under /api/ is no-store, so no route needs to say it."""
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response
    started = time.monotonic()
    app.extensions["edge"] = {"screening": screening, "sessions": sessions, "assistant": assistant,
                              "history": history}

    def language() -> str:
        asked = request.args.get("lang")
        if not asked and request.is_json:
            body = json_body()
            asked = body.get("lang") if isinstance(body, dict) else None
        if not asked and request.method == "POST" and not request.is_json:
            asked = request.form.get("lang")
        return i18n.supported(asked if isinstance(asked, str) else kiosk.language)

    # -- errors ----------------------------------------------------------------------------------------
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return jsonify({"error": str(exc), **exc.extra}), exc.status

    @app.errorhandler(RetakeNeeded)
    def retake(exc: RetakeNeeded):
        lang = language()
        return jsonify({"error": "retake", "quality": exc.quality.to_json(),
                        "guidance": [i18n.text(lang, f"quality.{issue.value}") for issue in exc.quality.issues]}), 422

    @app.errorhandler(NotFound)
    def not_found(exc: NotFound):
        return jsonify({"error": str(exc)}), 404

    @app.errorhandler(ImageError)
    def bad_image(exc: ImageError):
        return jsonify({"error": str(exc)}), 400

    @app.errorhandler(CameraUnavailable)
    @app.errorhandler(ModelError)
    @app.errorhandler(EdgeError)
    def unavailable(exc: EdgeError):
        return jsonify({"error": str(exc)}), 409

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        message = exc.description
        if exc.code == 413:
            message = "image is larger than the upload limit" if request.path == "/api/classify" else \
                f"request body above {JSON_BODY_LIMIT // 1024} kB"
        return jsonify({"error": message}), exc.code

    # -- pages and health ------------------------------------------------------------------------------
    @app.get("/")
    def index():
        # A fresh page is a fresh patient: a reload (or a restarted kiosk browser) must not carry the last
        # person's results, chat and red flags into the next person's session. Only a page load counts: an
        # <img> or a link prefetch from another site must not clear the patient's session.
        if request.headers.get("Sec-Fetch-Dest", "document") == "document" and \
                request.headers.get("Sec-Fetch-Site") != "cross-site":
            sessions.new_patient()
        lang = language()
        return render_template("index.html", lang=lang, catalogue=i18n.catalogue(lang), languages=i18n.LANGUAGES,
                               version=__version__, health_worker=kiosk.health_worker_mode,
                               idle_timeout_s=kiosk.idle_timeout_s, max_chat_chars=kiosk.max_chat_chars)

    @app.get("/api/i18n/<lang>")
    def catalogue(lang: str):
        if lang not in i18n.LANGUAGES:
            raise ApiError(404, f"unknown language {lang!r}: {', '.join(i18n.LANGUAGES)}")
        return jsonify(i18n.catalogue(lang))

    @app.get("/api/redflag-message")
    def redflag_message():
        """The fixed urgent message for red-flag ids (``?flags=bleeding,rapid_change``) in the page's language:
        the banner follows a language switch. Unknown ids are left out of the message."""
        from edge.assistant.redflags import urgent_message

        flags = [f for f in request.args.get("flags", "").split(",") if f][:16]
        return jsonify({"text": urgent_message(language(), flags)})

    @app.get("/health")
    def health():
        body = screening.health()
        body.update({"version": __version__, "uptime_s": round(time.monotonic() - started, 1),
                     "llm": assistant.health() if assistant else {"status": "disabled"},
                     "mqtt": mqtt.health() if mqtt else {"status": "disabled"}})
        return jsonify(body)

    @app.get("/metrics")
    def prometheus():
        text = metrics.render(screening.stats(), time.monotonic() - started, assistant.stats() if assistant else None)
        return Response(text, mimetype="text/plain; version=0.0.4")

    # -- preview and capture ---------------------------------------------------------------------------
    @app.get("/api/preview")
    def preview_status():
        sessions.expire_if_idle()  # the page polls this while idle: a walked-away patient's images go on time
        preview = screening.preview()
        if preview is None:
            return jsonify({"camera": False})
        lang = language()
        quality = preview.quality
        return jsonify({"camera": True, "index": preview.index, "ok": bool(quality and quality.ok),
                        "guidance": [i18n.text(lang, f"quality.{i.value}") for i in (quality.issues if quality else ())]})

    @app.get("/api/stream.mjpg")
    def stream():
        if screening.preview() is None:
            raise ApiError(409, "no camera on this device: upload a photo instead")
        limit = request.args.get("frames", type=int)
        return Response(stream_with_context(_mjpeg(screening, kiosk.preview_fps, limit)),
                        mimetype=f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}")

    @app.post("/api/capture")
    def capture():
        session = sessions.touch()
        return _result_response(screening.capture(), session)

    @app.post("/api/classify")
    def classify():
        upload = request.files.get("image")
        if upload is None:
            raise ApiError(400, "send the photo as multipart form field 'image'")
        data = upload.read(settings.limits.max_bytes + 1)
        if len(data) > settings.limits.max_bytes:
            raise ApiError(413, "image is larger than the upload limit")
        session = sessions.touch()
        return _result_response(screening.classify_upload(data), session)

    def _result_response(result, session):
        current = sessions.add(result, started_in=session)
        if not current:  # New patient (or a reload) while it was analysed: not the next person's result
            screening.forget([result.id])
            log.info("a result was discarded: a new patient session started while it was analysed")
        saved = None
        if history is not None:
            try:
                history.record(result)
                saved = True
            except sqlite3.Error as exc:  # e.g. a full SD card: the person still gets the result
                log.error("could not save a screening to the local history: %s", exc)
                saved = False
        if not current:  # 410: the page shows "the session was cleared"
            raise ApiError(410, "a new patient session started while this photo was analysed: its result was not "
                                "added to the new session", **({} if saved is None else {"saved_to_history": saved}))
        lang = language()
        # queued under the session lock: a New patient arriving meanwhile wipes the model after this, not before
        if assistant is not None and not sessions.while_current(session, lambda: assistant.prepare(result, lang)):
            log.info("the session was cleared while a result was saved; the assistant is not prepared with it")
        body = result.to_json()
        body["urgency_text"] = i18n.text(lang, f"urgency.{result.urgency.value}")
        body["next_step"] = i18n.text(lang, f"next.{result.urgency.value}")
        body["saliency_url"] = f"/api/saliency/{result.id}.png"
        if saved is not None:
            body["saved_to_history"] = saved
        return jsonify(body)

    @app.get("/api/saliency/<result_id>.png")
    def saliency(result_id: str):
        sessions.result(result_id)
        return Response(screening.saliency_png(result_id), mimetype="image/png")

    @app.post("/api/session/new")
    def new_patient():
        sessions.new_patient()
        return jsonify({"ok": True})

    @app.post("/api/session/touch")
    def keep_alive():
        """The page saw the person act (scroll, key, touch) without calling the API: their session is in use.
        Says whether it still holds results (false: it had already expired and was cleared)."""
        return jsonify({"active": bool(sessions.touch().results)})

    # -- symptoms, chat, report ------------------------------------------------------------------------
    @app.post("/api/symptoms/<result_id>")
    def symptoms(result_id: str):
        from edge.assistant.symptoms import adjust_urgency

        result = sessions.result(result_id)
        body = json_body()
        ticked = body.get("symptoms") if isinstance(body, dict) else None
        if not isinstance(ticked, list) or not all(isinstance(s, str) for s in ticked):
            raise ApiError(400, "send JSON {\"symptoms\": [ids]}")
        try:
            adjustment = adjust_urgency(result.urgency, set(ticked), language())
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        sessions.touch().symptoms[result_id] = frozenset(ticked)
        return jsonify({"urgency": adjustment.urgency.value, "reasons": list(adjustment.reasons),
                        "urgency_text": i18n.text(language(), f"urgency.{adjustment.urgency.value}")})

    @app.post("/api/chat")
    def chat():
        body = json_body()
        if (not isinstance(body, dict) or not isinstance(body.get("message"), str) or not body["message"].strip()
                or not isinstance(body.get("result_id") or "", str)):
            raise ApiError(400, "send JSON {\"message\": \"…\"} with an optional result_id and lang")
        message = body["message"].strip()
        if len(message) > kiosk.max_chat_chars:
            raise ApiError(413, f"message is longer than {kiosk.max_chat_chars} characters")
        result = sessions.result(body["result_id"]) if body.get("result_id") else None
        lang = language()
        if assistant is None:
            raise ApiError(409, "the assistant is not enabled on this device")
        session = sessions.touch()
        events = assistant.answer(message, result, lang, history=list(session.chat),
                                  symptoms=session.symptoms.get(result.id, frozenset()) if result else frozenset(),
                                  abandoned=request.environ.get("waitress.client_disconnected"))
        session.chat.append({"role": "user", "content": message})
        return Response(stream_with_context(_sse(events, session, message)), mimetype="text/event-stream",
                        headers={"X-Accel-Buffering": "no"})

    @app.get("/api/report/<result_id>")
    def report(result_id: str):
        result = sessions.result(result_id)
        fmt = request.args.get("format", "json")
        if fmt not in ("json", "md", "html"):
            raise ApiError(400, "format must be json, md or html")
        if assistant is None:
            raise ApiError(409, "reports need the assistant package")
        session = sessions.touch()
        built, note = assistant.report(result, language(), symptoms=session.symptoms.get(result_id, frozenset()),
                                       red_flag_text=" ".join(session.red_flag_messages),
                                       abandoned=request.environ.get("waitress.client_disconnected"),
                                       overviews=session.overviews)
        # The report page carries its own CSP <meta>; the headers say it again for whatever reads the response
        # (no script, no fetches, shown only inside this kiosk) and stop content sniffing.
        headers = {"X-Report-Source": built.source,
                   "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'",
                   "X-Content-Type-Options": "nosniff"}
        if fmt == "md":
            return Response(built.markdown(), mimetype="text/markdown; charset=utf-8", headers=headers)
        if fmt == "html":
            return Response(built.html(), mimetype="text/html; charset=utf-8", headers=headers)
        return jsonify({"source": built.source, "note": note, "urgency": built.urgency.value,
                        "sections": [{"key": key, "title": title, "text": text}
                                     for key, (title, text) in zip(built.keys, built.sections)]})

    # -- health-worker history -------------------------------------------------------------------------
    def _history():
        if history is None:
            raise ApiError(404, "history is only kept in health-worker mode (kiosk.health_worker_mode)")
        if not (settings.kiosk.history_from_network or _from_this_device(request.remote_addr)):
            # every screening's time, result and note: with the UI opened to a network, anyone on it could read
            raise ApiError(403, "the history can only be opened on the device itself (kiosk.history_from_network)")
        return history

    @app.get("/api/history")
    def history_list():
        return jsonify({"entries": _history().entries()})

    @app.get("/api/history.csv")
    def history_csv():
        return Response(_history().csv(), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=edge-history.csv"})

    @app.post("/api/history/<result_id>/note")
    def history_note(result_id: str):
        body = json_body()
        note = body.get("note") if isinstance(body, dict) else None
        if not isinstance(note, str) or len(note) > 1000:
            raise ApiError(400, "send JSON {\"note\": \"…\"} of at most 1000 characters")
        if not _history().set_note(result_id, note):
            raise NotFound(f"no history entry {result_id!r}")
        return jsonify({"ok": True})

    @app.post("/api/history/purge")
    def history_purge():
        return jsonify({"deleted": _history().purge()})

    return app


def _mjpeg(screening: Screening, fps: float, limit: int | None) -> Iterator[bytes]:
    """Frames as they come; the stream ends when no new frame has come for ``MJPEG_IDLE_S`` (camera down,
    frozen), so a server thread is never held by a stream that writes nothing. A dropout shorter than that
    keeps the stream: the page's poll may never see it, and nothing would restart an ended stream then. A
    longer one is seen by the poll, which closes the stream and opens a new one when the camera is back."""
    sent, last_index, last_new = 0, None, time.monotonic()
    while limit is None or sent < limit:
        preview = screening.preview()
        if time.monotonic() - last_new > MJPEG_IDLE_S:
            return
        if preview is not None and preview.index != last_index:
            last_index, last_new = preview.index, time.monotonic()
            sent += 1
            yield (f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(preview.jpeg)}\r\n"
                   f"X-Quality-Ok: {int(bool(preview.quality and preview.quality.ok))}\r\n\r\n").encode() \
                + preview.jpeg + b"\r\n"
        time.sleep(1.0 / fps)


def _sse(events, session, message: str) -> Iterator[str]:
    answer = []
    try:
        for event in events:
            if event.kind in ("token", "replace", "redflag"):
                answer = [event.data["text"]] if event.kind != "token" else answer + [event.data["text"]]
            if event.kind == "redflag":
                session.red_flag_messages.append(message)  # raises the tier in this patient's report
            yield f"event: {event.kind}\ndata: {json.dumps(event.data)}\n\n"
    finally:
        if answer:
            session.chat.append({"role": "assistant", "content": "".join(answer)})
