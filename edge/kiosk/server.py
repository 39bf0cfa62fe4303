"""The kiosk's HTTP server: waitress on its own thread, with a shutdown that leaves no file descriptor behind.

waitress's own ``server.close()`` is unsafe from another thread while a browser holds kept-alive connections:
those connections stay in waitress's loop and go on being served, and every finished request wakes the loop
by writing one byte to the trigger pipe through the raw fd number that ``close()`` has already released.
Whatever the process opens next under that number gets an ``x`` written into it (in one CI run: the
history database, which then read as "file is not a database").

So ``close`` goes in an order where nobody can write to a closed descriptor:
1. the loop thread itself closes the listening socket and every connection (a request still running gets
   ``ClientDisconnected`` on its next write, so a live preview or an answer stream ends within one chunk)
   and then leaves its loop;
2. the worker threads finish and are joined;
3. only then is the trigger pipe closed. If a worker is stuck, the pipe is left open (two descriptors)
   rather than risk a write into someone else's file.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("edge.kiosk")


class KioskServer:
    def __init__(self, app, host: str, port: int, *, threads: int = 6, channel_timeout: int = 30) -> None:
        from waitress import create_server

        # poll() rather than select(): no EBADF from a descriptor that closes between two loop turns
        self._server = create_server(app, host=host, port=port, threads=threads, channel_timeout=channel_timeout,
                                     asyncore_use_poll=True)
        self.port = int(self._server.effective_port)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.run, name="kiosk", daemon=True)
        self._thread.start()

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

        def close_sockets() -> None:
            for dispatcher in list(server._map.values()):
                if dispatcher is not trigger:
                    dispatcher.close()
            trigger.del_channel()  # the map is now empty, so the loop returns; the pipe itself stays open

        if self.running:
            trigger.pull_trigger(close_sockets)  # runs on the loop thread, between two polls
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                log.warning("kiosk server loop did not stop within %.0f s", timeout_s)
                return False
        else:
            close_sockets()
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=max(0.1, deadline - time.monotonic()))
        stuck = len(server.task_dispatcher.threads)
        if stuck:
            log.warning("kiosk server: %d request thread(s) still running; its wake-up pipe stays open", stuck)
            return False
        trigger.close()
        return True
