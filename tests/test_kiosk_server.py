"""The kiosk's waitress server stops without leaving threads behind or writing into descriptors it gave up.

The regression: waitress's own close() from another thread left kept-alive connections being served, and each
finished request wrote a wake-up byte through the trigger pipe's released fd number, into whatever file had
been opened under that number since (CI saw the history database corrupted that way).
"""

from __future__ import annotations

import errno
import http.client
import socket
import threading
import time

import pytest

from edge.kiosk.server import KioskServer


def kiosk_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "kiosk" or t.name.startswith("waitress-")}


def test_a_kept_alive_connection_after_close_writes_into_no_file(kiosk, tmp_path):
    server = KioskServer(kiosk.app, "127.0.0.1", 0)
    server.start()
    browser_like = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)  # keep-alive, as a page polls
    browser_like.request("GET", "/api/preview")
    assert browser_like.getresponse().read()

    assert server.close()
    # the lowest free descriptors: the ones the server's wake-up pipe had, if it released them
    victims = [open(tmp_path / f"file{i}", "wb") for i in range(4)]
    try:
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            browser_like.request("GET", "/api/preview")  # the page's next poll is refused, not served
            browser_like.getresponse().read()
        time.sleep(0.3)
    finally:
        for handle in victims:
            handle.close()
        browser_like.close()
    assert [(tmp_path / f"file{i}").stat().st_size for i in range(4)] == [0, 0, 0, 0]


def test_close_ends_a_live_preview_stream_and_every_server_thread(kiosk):
    before = kiosk_threads()
    server = KioskServer(kiosk.app, "127.0.0.1", 0)
    server.start()
    viewer = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    viewer.sendall(b"GET /api/stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert viewer.recv(200).startswith(b"HTTP/1.1 200")  # a never-ending stream is being served
    assert server.close(timeout_s=5)  # True: the stream and every server thread ended within the 5 s
    assert not server.running
    assert kiosk_threads() <= before
    viewer.settimeout(5)
    received = b""
    while chunk := viewer.recv(65536):  # the stream ends with the connection, not by the viewer's timeout
        received += chunk
    viewer.close()
    assert server.close()  # a second close is harmless


def test_close_before_start_releases_everything(kiosk):
    before = kiosk_threads()
    server = KioskServer(kiosk.app, "127.0.0.1", 0)
    assert server.close()
    assert kiosk_threads() <= before
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2)


def test_close_stops_the_server_even_when_its_wake_up_pipe_fails(kiosk, monkeypatch):
    """CI once saw the wake-up write fail with EBADF inside close(): the server must still stop (the loop
    notices the stop on its poll timeout) and leave no thread behind, instead of raising and leaking them."""
    before = kiosk_threads()
    server = KioskServer(kiosk.app, "127.0.0.1", 0)
    server.start()

    def unusable_pipe():
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(server._server.trigger, "_physical_pull", unusable_pipe)
    assert server.close(timeout_s=5)  # True: every server thread ended within the 5 s, without the pipe
    assert not server.running
    assert kiosk_threads() <= before


def test_an_upload_through_the_real_server_is_never_written_to_a_temporary_file(kiosk, monkeypatch):
    """waitress spools a request body over 512 kB (the whole multipart upload, file name included) to a
    temporary file, and Werkzeug the image part over 500 kB: a patient's photo must stay in memory."""
    import tempfile
    import traceback
    import uuid

    from conftest import PRETRAINED

    spooled = []
    real = tempfile.TemporaryFile

    def recording(*args, **kwargs):
        spooled.append(traceback.format_stack()[-2].strip())
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", recording)
    data = (PRETRAINED / "cat.bmp").read_bytes()
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"lang\"\r\n\r\nen{' ' * 4096}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"patient.bmp\"\r\n"
            "Content-Type: image/bmp\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    assert len(data) > 500 * 1024 and len(body) > 512 * 1024  # both spooling thresholds
    server = KioskServer(kiosk.app, "127.0.0.1", 0)
    server.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("POST", "/api/classify", body=body,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = connection.getresponse()
        response.read()
        connection.close()
    finally:
        assert server.close()
    assert response.status == 422  # read, decoded, refused by the quality gate (a cat is not skin)
    assert spooled == []
