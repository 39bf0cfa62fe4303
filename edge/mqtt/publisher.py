"""The MQTT service: outbox → ``results``, retained ``status`` with a last will, ``telemetry`` on a timer,
signed commands on ``cmd`` with replies on ``cmd/reply``, optional Home Assistant discovery.

One thread owns the paho client and does everything network-side; other threads only touch the outbox
(``publish_result``) and two events. Commands are checked and carried out on a second thread, one at a time,
so that a long one (a model download) never stops the keepalive; their replies go back through queues. Each
connection gets a fresh client, so paho never resends messages of its own from a dead connection: the outbox
is the single source of truth. On every (re)connect the outbox is resent from its oldest row, in order; a row
leaves the outbox only on its PUBACK, so a result is delivered at least once and duplicates carry the same
``event_id``. By default a result is sent only once the minute it happened in has ended
(``mqtt.results.hold_until_minute_end``), so the arrival time of a message says no more about when a person
was screened than its rounded ``time`` does.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from edge import __version__
from edge.config import Settings
from edge.errors import ConfigError, EdgeError
from edge.mqtt import actions
from edge.mqtt.commands import CommandVerifier
from edge.mqtt.connection import Backoff, Will, check_files, make_client
from edge.mqtt.device import device_id as stored_device_id
from edge.mqtt.discovery import discovery_messages
from edge.mqtt.nonces import NONCE_FILE, NonceStore
from edge.mqtt.outbox import OUTBOX_FILE, Outbox
from edge.mqtt.payloads import encode, result_payload
from edge.mqtt.signing import load_admin_keys
from edge.mqtt.telemetry import FrameRate, telemetry_payload, without_paths
from edge.mqtt.topics import Topics
from edge.types import Result

log = logging.getLogger("edge.mqtt")
# Telemetry fields that move with each screening (and its exact time): a status reply leaves them out while
# results are held to their minute's end, until the first minute-end telemetry has gone out.
SCREENING_COUNTERS = ("classifications", "rejects", "queue_depth", "dropped", "time")
RESTART_EXIT_CODE = 75  # EX_TEMPFAIL: systemd's Restart=on-failure starts the daemon again
LOOP_TIMEOUT_S = 0.05
REPLY_FLUSH_S = 5.0  # how long a restart waits for its reply to be acknowledged
OFFLINE_FLUSH_S = 2.0
ONLINE, OFFLINE = "online", "offline"
MAX_HOLD_S = 60.0
MINUTE_S = 60.0
COMMAND_BACKLOG = 32  # commands received and not yet carried out; more are dropped with a warning


def release_time(timestamp: float) -> float:
    """The end of the minute ``timestamp`` falls in: sending no earlier keeps the arrival time of a message
    from revealing more than the payload's rounded ``time``."""
    return (timestamp // 60 + 1) * 60


def exit_for_restart() -> None:
    """Default restart: leave at once with a distinct code. The outbox is durable, so nothing is lost."""
    log.warning("restarting on an administrator's command (exit %d)", RESTART_EXIT_CODE)
    os._exit(RESTART_EXIT_CODE)


class MqttService:
    """The device's MQTT side, built by the daemon when ``mqtt.host`` is set; ``publish_result`` is the
    pipeline's consumer, ``health()`` feeds /health, and the hooks let commands purge and restart."""

    def __init__(self, settings: Settings, *, health: Callable[[], dict[str, Any]] = dict,
                 purge: Callable[[], dict[str, int]] | None = None,
                 restart: Callable[[], None] = exit_for_restart, clock: Callable[[], float] = time.time) -> None:
        config = settings.mqtt
        if not config.enabled:
            raise ConfigError("mqtt.host is not set: MQTT is off")
        check_files(config)
        admin_keys = load_admin_keys(config.commands.admin_keys)  # config errors first, before opening files
        self._admin_keys = admin_keys
        self.settings = settings
        self.device_id = stored_device_id(settings.state_dir)
        self.topics = Topics.for_device(config.topic_prefix, self.device_id, config.fleet_topic)
        self.outbox = Outbox(settings.state_dir / OUTBOX_FILE, config.outbox_cap)
        self.verifier: CommandVerifier | None = None
        if config.commands.enabled:
            self.verifier = CommandVerifier(
                self.device_id, admin_keys,
                NonceStore(settings.state_dir / NONCE_FILE), clock_skew_s=config.commands.clock_skew_s,
                max_lifetime_s=config.commands.max_lifetime_s, clock=clock)
        self._config = config  # connection settings as started; only LIVE_KEYS are re-read from self.settings
        self._health, self._purge, self._restart, self._clock = health, purge, restart, clock
        self._backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s)
        self._frame_rate = FrameRate()
        self._client: mqtt.Client | None = None
        self._session_up = False
        self._up_since: float | None = None  # when the current connection came up, until it has lasted
        self._inflight: dict[int, int] = {}  # mid -> outbox seq
        self._acked: list[int] = []  # seqs acknowledged in this turn, deleted together
        self._last_sent_seq = 0
        self._held_until: float | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_telemetry: float | None = None  # None: the first message is due (at once, or at a minute end)
        self._last_telemetry: dict[str, Any] | None = None  # as published: what status shows while holding
        self._removal_warned_at = float("-inf")  # a failed outbox removal is logged at most once a minute
        self._restart_requested = False  # set and read by the command thread only
        self._restart_fired = False  # the restart hook has run: the process is on its way out
        self._commands: queue.Queue[tuple[bytes, bool]] = queue.Queue(COMMAND_BACKLOG)  # (payload, fleet)
        self._replies: queue.Queue[tuple[dict[str, Any], bool]] = queue.Queue()  # (reply, restart after it)
        self._command_thread: threading.Thread | None = None
        self._restart_mid: int | None = None
        self._unacked_replies: dict[int, dict[str, Any]] = {}  # mid -> reply, on the current connection
        self._restart_deadline: float | None = None
        self._commands_granted = threading.Event()  # the broker granted this connection's command subscription
        self.state = "stopped"
        self.last_error: str | None = None
        self.connects = 0

    # -- other threads --------------------------------------------------------------------------------------
    def publish_result(self, result: Result) -> str | None:
        """The pipeline's consumer: store the anonymised result durably, then let the MQTT thread send it.
        Returns the message's event id (None if the cap policy dropped it)."""
        results = self.settings.mqtt.results
        payload = result_payload(result, self.device_id, include_age_band=results.include_age_band,
                                 include_body_site=results.include_body_site)
        release_at = release_time(result.timestamp) if results.hold_until_minute_end else 0.0
        if not self.outbox.enqueue(payload["event_id"], encode(payload), result.urgency, release_at):
            return None
        self._wake.set()
        return payload["event_id"]

    def start(self) -> None:
        self.state = "connecting"
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._thread.start()
        if self.verifier is not None:
            self._command_thread = threading.Thread(target=self._serve_commands, name="mqtt-commands", daemon=True)
            self._command_thread.start()
        log.info("MQTT on for device %s: broker %s:%d, topics %s/…, %d queued results", self.device_id,
                 self._config.host, self._config.port, self.topics.prefix, self.outbox.depth())

    def stop(self, timeout: float = 10.0) -> None:
        """Say ``offline``, disconnect cleanly and close the outbox. Queued results stay queued."""
        self._stop.set()
        for thread in (self._thread, self._command_thread):
            if thread is not None:
                thread.join(timeout)
        self.outbox.close()
        if self.verifier is not None:
            self.verifier.nonces.close()
        self.state = "stopped"

    def health(self) -> dict[str, Any]:
        """For the kiosk's /health: local only, so the broker address may appear; secrets never do."""
        return {"status": self.state, "device_id": self.device_id, "broker": f"{self._config.host}:{self._config.port}",
                "queue_depth": self.outbox.depth(), "delivered": self.outbox.delivered,
                "dropped": self.outbox.dropped, "last_error": self.last_error,
                "commands": "off" if self.verifier is None else
                ("listening" if self.listening_for_commands else "not subscribed")}

    @property
    def listening_for_commands(self) -> bool:
        """The broker has acknowledged the subscription to this device's command topics on the current
        connection: a command published from now on reaches the device. Until then ("connected" comes first) it
        may be lost, and a broker whose access list denies the subscription never sets this."""
        return self._commands_granted.is_set()

    # -- the MQTT thread ------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._turn()
            except Exception as exc:  # a bug or a disk error must not end MQTT for good: log, drop, retry
                log.exception("MQTT loop failed")
                self._abandon_client()
                self._acked, self._session_up = [], False
                self._note_failure(f"internal error: {exc}")
                self._wait_before_reconnect()
            self._restart_if_due()  # also while the broker is away: a restart never waits for it
        self._shutdown()

    def _turn(self) -> None:
        """One turn: connect if needed, run paho's network loop once, then send what is due."""
        if self._client is None and not self._connect():
            self._wait_before_reconnect()
            return
        assert self._client is not None
        rc = self._client.loop(timeout=LOOP_TIMEOUT_S)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            refused = rc == MQTTErrorCode.MQTT_ERR_CONN_REFUSED and self.last_error
            if refused:
                reason = self.last_error
            elif not self._session_up:  # closed before any CONNACK: paho only says "connection lost"
                reason = (f"the broker closed the connection before accepting the session ({rc.name})"
                          + ("; with TLS: a client certificate missing or rejected, or a TLS/plain port mismatch"
                             if self._config.tls.active else "; is this an MQTT port?"))
            else:
                reason = f"connection lost ({rc.name})"
            self._connection_lost(reason)
            self._wait_before_reconnect()
            return
        if self._acked:
            try:
                self.outbox.remove(self._acked)
                self._acked = []
            except sqlite3.Error as exc:  # disk full: keep them for the next turn, stay connected, keep sending
                self._note_removal_failure(exc)
        if self._up_since is not None and time.monotonic() - self._up_since >= self._config.keepalive_s:
            self._backoff.reset()
            self._up_since = None
        if self._session_up:
            self._send_replies()
            self._pump()
            self._telemetry_if_due()

    def _note_removal_failure(self, exc: sqlite3.Error) -> None:
        """Acknowledged results could not be taken out of the outbox (a full disk): they stay there and may be
        sent again after a restart (their event_id tells the duplicates apart). Logged once a minute."""
        now = time.monotonic()
        if now - self._removal_warned_at >= 60:
            self._removal_warned_at = now
            log.error("outbox: %d acknowledged result(s) not removed (%s); retrying", len(self._acked), exc)

    def _connect(self) -> bool:
        config = self._config
        try:
            client = make_client(config, config.client_id or f"edge-{self.device_id}",
                                 will=Will(self.topics.status, OFFLINE), clean_session=False)
        except ConfigError as exc:  # e.g. the password file became unreadable: retried, and visible in health
            self._note_failure(str(exc))
            return False
        client.max_inflight_messages_set(config.max_inflight)
        client.on_connect, client.on_disconnect = self._on_connect, self._on_disconnect
        client.on_publish, client.on_message = self._on_publish, self._on_message
        client.on_subscribe = self._on_subscribe
        try:
            client.connect(config.host, config.port, keepalive=config.keepalive_s)
        except (OSError, ValueError) as exc:
            self._note_failure(f"cannot connect to {config.host}:{config.port}: {exc}")
            return False
        self._client = client
        return True

    def _note_failure(self, message: str) -> None:
        """Record why we are offline; warn on attempts 0, 1, 2, 4, 8 … so a lasting fault stays visible
        without flooding the journal of a device that is offline for days."""
        self.state, self.last_error = "disconnected", message
        attempts = self._backoff.attempts
        (log.warning if attempts & (attempts - 1) == 0 else log.debug)("%s", message)

    def _wait_before_reconnect(self) -> None:
        delay = self._backoff.next_delay()
        log.debug("reconnecting in %.1f s (attempt %d)", delay, self._backoff.attempts)
        self._stop.wait(delay)

    def _connection_lost(self, why: str) -> None:
        # No DISCONNECT packet: the broker must see an unclean end and publish the last will.
        self.outbox.remove(self._acked)
        self._acked = []
        self._session_up = False
        self._abandon_client()
        self._note_failure(why)

    def _abandon_client(self) -> None:
        """Forget this connection's client; close its socket if paho has not (never a DISCONNECT)."""
        client, self._client = self._client, None
        self._commands_granted.clear()
        self._inflight.clear()
        self._up_since, self._restart_mid = None, None  # message ids belong to the client that is going
        for reply in self._unacked_replies.values():
            self._replies.put((reply, False))
        self._unacked_replies.clear()
        sock = client.socket() if client is not None else None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"  # logged when the socket closes
            return
        self._session_up, self.state, self.last_error = True, "connected", None
        self.connects += 1
        log.info("connected to %s:%d after %d retries; %d results queued", self._config.host, self._config.port,
                 self._backoff.attempts, self.outbox.depth())
        # The backoff is reset once this connection has lasted a keepalive, not now: a broker that accepts
        # and then drops us (a clone with our client id, a denied subscribe) must not be retried every second.
        self._up_since = time.monotonic()
        self._inflight.clear()
        self._last_sent_seq = 0  # resend everything still in the outbox, oldest first
        self._wake.set()
        client.publish(self.topics.status, ONLINE, qos=1, retain=True)
        self._commands_granted.clear()
        if self.verifier is not None:
            client.subscribe([(self.topics.cmd, 1), (self.topics.fleet_cmd, 1)])
        if self._config.home_assistant:
            for topic, config in discovery_messages(self._config.discovery_prefix, self.device_id, self.topics):
                client.publish(topic, json.dumps(config), qos=1, retain=True)
        self._next_telemetry = None

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:  # an access list that denies the topics: the device is up but no command can reach it
            self._commands_granted.clear()
            self.last_error = f"the broker refused the command subscription: {', '.join(refused)}"
            log.error("%s; administration commands cannot reach this device", self.last_error)
        else:
            self._commands_granted.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._session_up, self._up_since = False, None
        self._commands_granted.clear()
        if not self._stop.is_set():
            self.state = "disconnected"

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is not None:
            self._acked.append(seq)
            self._wake.set()
        if self._unacked_replies.pop(mid, None) is not None and mid == self._restart_mid:
            self._restart_deadline = time.monotonic()

    def _pump(self) -> None:
        """Keep up to ``max_inflight`` results in flight, in outbox order. A row still held (its minute has not
        ended) holds back every row after it, so order is kept."""
        room = self._config.max_inflight - len(self._inflight)
        now = self._clock()
        # Due once its time has come, or at once if the clock was set back (the row's time is then far ahead).
        held_due = self._held_until is not None and not (now < self._held_until <= now + MAX_HOLD_S)
        if room <= 0 or not (self._wake.is_set() or held_due):
            return
        self._wake.clear()  # cleared before reading: an enqueue after this sets it again
        self._held_until = None
        rows = self.outbox.pending(self._last_sent_seq, room)
        for row in rows:
            if now < row.release_at <= now + MAX_HOLD_S:  # further ahead means the clock was set back: send
                self._held_until = row.release_at
                return
            info = self._client.publish(self.topics.results, row.payload, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._wake.set()
                return
            self._inflight[info.mid] = row.seq
            self._last_sent_seq = row.seq
        if len(rows) == room:
            self._wake.set()

    def _telemetry_if_due(self) -> None:
        now = time.monotonic()
        if self._next_telemetry is None:
            self._next_telemetry = now + self._telemetry_delay(0.0)
        if now < self._next_telemetry:
            return
        self._next_telemetry = now + self._telemetry_delay(self.settings.mqtt.telemetry_interval_s)
        self._last_telemetry = self._telemetry()
        self._client.publish(self.topics.telemetry, json.dumps(self._last_telemetry), qos=0, retain=True)

    def _telemetry_delay(self, interval_s: float) -> float:
        """Seconds to the next telemetry message. While results are held to the end of their minute, telemetry
        goes out only at minute ends and at most once a minute: its counters (classifications, queue depth)
        would otherwise time a screening more finely than the result's own rounded time."""
        if not self.settings.mqtt.results.hold_until_minute_end:
            return interval_s
        wall = self._clock()
        target = wall + max(interval_s, MINUTE_S)
        return max(0.0, target - target % MINUTE_S - wall) if interval_s else MINUTE_S - wall % MINUTE_S

    def _telemetry(self) -> dict[str, Any]:
        health = self._health() or {}
        return telemetry_payload(health, fps=self._frame_rate.update(int(health.get("frames", 0))),
                                 queue_depth=self.outbox.depth(), dropped=self.outbox.dropped, now=self._clock(),
                                 minute_resolution=self.settings.mqtt.results.hold_until_minute_end)

    def _on_message(self, client, userdata, message) -> None:
        """Hand a command to the command thread: paho's loop must keep running (keepalive pings, results)
        while a command is carried out, and a model download can take a minute."""
        if message.topic not in (self.topics.cmd, self.topics.fleet_cmd) or self.verifier is None:
            return
        try:
            self._commands.put_nowait((message.payload, message.topic == self.topics.fleet_cmd))
        except queue.Full:
            log.warning("command dropped: %d commands are already waiting", COMMAND_BACKLOG)

    def _send_replies(self) -> None:
        while True:
            try:
                reply, restart = self._replies.get_nowait()
            except queue.Empty:
                return
            info = self._client.publish(self.topics.cmd_reply, json.dumps(reply), qos=1)
            self._unacked_replies[info.mid] = reply  # sent again on the next connection if this one dies first
            if restart:  # restart as soon as this reply is acknowledged (the deadline was set when it was queued)
                self._restart_mid = info.mid

    # -- the command thread ---------------------------------------------------------------------------------
    def _serve_commands(self) -> None:
        """Check and carry out commands one at a time, in the order received; replies go back through the
        MQTT thread, which alone talks to paho."""
        while not self._stop.is_set():
            try:
                payload, fleet = self._commands.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                reply = actions.respond(payload, verifier=self.verifier, runtime=self, fleet=fleet)
            except Exception:  # respond() already turns failures into replies; this thread must not die
                log.exception("command handling failed")
                continue
            restart, self._restart_requested = self._restart_requested, False
            if restart:  # at the latest this long after the command ran, acknowledged or not, broker or not
                self._restart_deadline = time.monotonic() + REPLY_FLUSH_S
            if reply is not None:
                self._replies.put((reply, restart))

    def _restart_if_due(self) -> None:
        if self._restart_deadline is None or time.monotonic() < self._restart_deadline:
            return
        self._restart_fired = True  # first: restart_pending never reads False in between
        self._restart_deadline, self._restart_mid = None, None
        self._restart()

    def _shutdown(self) -> None:
        client = self._client
        if client is not None and self._session_up:
            info = client.publish(self.topics.status, OFFLINE, qos=1, retain=True)
            deadline = time.monotonic() + OFFLINE_FLUSH_S
            while not info.is_published() and time.monotonic() < deadline:
                if client.loop(timeout=LOOP_TIMEOUT_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
            client.disconnect()
            client.loop(timeout=LOOP_TIMEOUT_S)
        self.outbox.remove(self._acked)
        self._acked = []
        self._client, self._session_up = None, False
        log.info("MQTT stopped; %d results queued for the next connection", self.outbox.depth())

    # -- Runtime (for actions) ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """While results are held to their minute's end, the counters that move with each screening
        (classifications, queue depth, delivered) are those of the last telemetry, sent at a minute end:
        a status command answered at once would otherwise time a screening to the second."""
        mqtt_health = {key: value for key, value in self.health().items() if key != "broker"}  # no addresses
        updates = self._model_updates()
        if not self.settings.mqtt.results.hold_until_minute_end:
            return {"device_id": self.device_id, "software_version": __version__, "mqtt": mqtt_health,
                    "telemetry": self._telemetry(), "model_updates": updates}
        for key in ("queue_depth", "delivered", "dropped"):
            mqtt_health.pop(key, None)
        telemetry = self._last_telemetry
        if telemetry is None:  # none sent yet (just started): the machine's state now, without the counters
            telemetry = {key: value for key, value in self._telemetry().items() if key not in SCREENING_COUNTERS}
        return {"device_id": self.device_id, "software_version": __version__, "mqtt": mqtt_health,
                "telemetry": telemetry, "model_updates": updates}

    def _model_updates(self) -> dict[str, Any] | None:
        """What the model store holds: the current and previous packs, a pack on trial (and its starts), the
        last rollback and why: an update that was accepted and later rolled back shows here."""
        from edge.updates import ModelStore

        try:
            state = ModelStore.from_settings(self.settings).status()
        except (OSError, EdgeError) as exc:
            return {"error": without_paths(str(exc))}
        rollback = state.get("last_rollback")
        if rollback is not None and not isinstance(rollback, dict):  # a damaged record: say so, do not fail
            state["last_rollback"] = {"error": "the rollback record is unreadable"}
        elif rollback:
            state["last_rollback"] = {**rollback, "reason": without_paths(str(rollback.get("reason") or "")) or None}
        return state

    def apply_live(self, settings: Settings, changed: list[str]) -> None:
        self.settings = settings
        if "log_level" in changed:
            actions.set_process_log_level(settings.log_level)
        if "mqtt.telemetry_interval_s" in changed:
            self._next_telemetry = None  # publish now (or at the next minute end), then on the new interval
        if self.verifier is not None:
            self.verifier.clock_skew_s = settings.mqtt.commands.clock_skew_s
            self.verifier.max_lifetime_s = settings.mqtt.commands.max_lifetime_s

    def purge_local_data(self) -> dict[str, int]:
        # Rows already in flight are acknowledged later and then deleted: a no-op for rows cleared here.
        purged = {"outbox": self.outbox.clear()}
        if self._purge is not None:
            purged.update(self._purge())
        log.warning("local data purged by an administrator: %s", purged)
        return purged

    def schedule_restart(self) -> None:
        self._restart_requested = True

    @property
    def restart_pending(self) -> bool:
        """An earlier command asked for a restart (a model update, ``restart``) that has not completed: asked
        for, due, or under way (the daemon closing its parts, while this thread still takes commands)."""
        return self._restart_requested or self._restart_deadline is not None or self._restart_fired

    def install_model(self, source: str, sha256: str, manifest_signature: str,
                      manifest_key_id: str | None):
        """Install a signed model pack into ``state_dir/models`` (``edge.updates``); it is loaded at the
        next start. The admin keys that verify commands also verify the pack's manifest."""
        from edge.updates import ModelStore

        return ModelStore.from_settings(self.settings).install(source, sha256, manifest_signature,
                                                               self._admin_keys, manifest_key_id=manifest_key_id,
                                                               baseline=Path(self.settings.inference.model_dir))
