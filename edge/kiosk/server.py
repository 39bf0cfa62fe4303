"""The kiosk's HTTP server: waitress on its own thread, with a shutdown that leaves no file descriptor behind.

waitress's own ``server.close()`` is unsafe from another thread while a browser holds kept-alive connections:
those connections stay in waitress's loop and go on being served, and every finished request wakes the loop
by writing one byte to the trigger pipe through the raw fd number that ``close()`` has already released.
Whatever the process opens next under that number gets an ``x`` written into it (in one CI run: the
history database, which then read as "file is not a database").

So ``close`` goes in an order where nobody can write to a closed descriptor:
1. the loop thread itself closes the listening socket and every connection (a request still running gets
   ``ClientDisconnected`` on its next write, so a live preview or an answer stream ends within one chunk)
   and then leaves its loop. The loop checks a stop event at least every ``LOOP_TIMEOUT_S``; ``close`` also
   pulls the trigger so that it usually wakes at once, but stopping never depends on the pipe still working;
2. the worker threads finish and are joined;
3. only then is the trigger pipe closed. If a worker is stuck, the pipe is left open (two descriptors)
   rather than risk a write into someone else's file.
"""

from __future__ import annotations

import logging
import threading
import time

from edge.errors import EdgeError

log = logging.getLogger("edge.kiosk")
LOOP_TIMEOUT_S = 0.2  # the longest the loop thread takes to notice a close without a wake-up
HEADROOM_BYTES = 64 * 1024  # multipart framing and form fields around an upload
OUTBUF_HIGH_WATERMARK = 4 * 1024 * 1024  # a response writer waits while this much is unsent
# Bodies are held in memory (up to the upload limit each): at most this many connections at once, so a
# flood of uploads cannot take a Pi's memory (waitress's default is 100). A kiosk page uses a few.
CONNECTION_LIMIT = 16


class KioskServer:
    def __init__(self, app, host: str, port: int, *, threads: int = 6, channel_timeout: int = 30) -> None:
        from waitress import create_server

        # poll() rather than select(): no EBADF from a descriptor that closes between two loop turns
        # channel_request_lookahead: waitress keeps reading a connection while its request runs, so a browser
        # that leaves mid-answer is noticed (environ["waitress.client_disconnected"]) and the model stopped.
        # Buffers stay in memory: waitress spools a request body over 512 kB, or unsent output over 1 MB, to
        # a temporary file, and a patient's photo (or preview frames to a slow client) must never be written
        # to disk. The request body is bounded by the app's upload limit; output by the high watermark, which
        # makes the writer wait, plus one chunk.
        body_limit = int(app.config.get("MAX_CONTENT_LENGTH") or 20 * 1024 * 1024) + HEADROOM_BYTES
        try:
            self._server = create_server(app, host=host, port=port, threads=threads,
                                         channel_timeout=channel_timeout, asyncore_use_poll=True,
                                         channel_request_lookahead=1, max_request_body_size=body_limit,
                                         inbuf_overflow=body_limit + 1, outbuf_high_watermark=OUTBUF_HIGH_WATERMARK,
                                         outbuf_overflow=4 * OUTBUF_HIGH_WATERMARK,
                                         connection_limit=CONNECTION_LIMIT)
        except OSError as exc:
            raise EdgeError(f"the kiosk cannot listen on {host}:{port}: {exc.strerror or exc} (is edge.service "
                            "already running? set kiosk.port or kiosk.host)") from None
        self.port = int(self._server.effective_port)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="kiosk", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        from waitress import wasyncore

        server = self._server
        try:
            while not self._stopping.is_set() and server._map:
                wasyncore.loop(timeout=LOOP_TIMEOUT_S, map=server._map, use_poll=True, count=1)
        finally:
            self._close_sockets()  # on this thread: the loop is not polling them any more

    def _close_sockets(self) -> None:
        """Close the listening socket and every connection; the wake-up pipe stays open (see ``close``)."""
        server = self._server
        for dispatcher in list(server._map.values()):
            if dispatcher is not server.trigger:
                dispatcher.close()
        server.trigger.del_channel()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout_s: float = 5.0) -> bool:
        """Stop serving; True when every thread of the server ended within ``timeout_s``."""
        with self._lock:
            if self._closed:
                return True
            self._closed = True
        deadline = time.monotonic() + timeout_s
        server = self._server
        trigger = server.trigger
        self._stopping.set()
        if self.running:
            try:
                trigger.pull_trigger()  # wake the loop now rather than at its next timeout
            except OSError as exc:
                log.warning("kiosk server: its wake-up pipe is unusable (%s); stopping on the loop timeout", exc)
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                log.warning("kiosk server loop did not stop within %.0f s", timeout_s)
                return False
        else:
            self._close_sockets()
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=max(0.1, deadline - time.monotonic()))
        stuck = len(server.task_dispatcher.threads)
        if stuck:
            log.warning("kiosk server: %d request thread(s) still running; its wake-up pipe stays open", stuck)
            return False
        trigger.close()
        return True
