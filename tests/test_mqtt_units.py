"""The MQTT side's pure parts, without a broker: topics, payload allow-list, outbox policy, signatures,
command checks, remote settings, device id, telemetry readers, backoff."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
import types

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mqtt_broker import make_result

from edge.config import MqttCommandSettings, load_settings
from edge.errors import ConfigError, EdgeError
from edge.mqtt import actions, admin, remote_config
from edge.mqtt.commands import MAX_CLOCK_SKEW_S, MAX_COMMAND_BYTES, CommandRejected, CommandVerifier, NotForThisDevice
from edge.mqtt.connection import Backoff
from edge.mqtt.device import device_id
from edge.mqtt.nonces import NonceStore
from edge.mqtt.outbox import Outbox
from edge.mqtt.payloads import ALLOWED_KEYS, json_schema, minute_floor_iso, result_payload
from edge.mqtt.signing import (
    canonical_bytes,
    key_id,
    load_admin_keys,
    load_public_key,
    public_key_b64,
    sign_envelope,
    verify_envelope,
    write_private_key,
)
from edge.mqtt.telemetry import FrameRate, cpu_temperature_c, memory_rss_mb, telemetry_payload
from edge.mqtt.topics import (
    TopicError,
    Topics,
    all_devices_prefix,
    check_prefix_template,
    check_topic_filter,
    device_of,
    topic_matches,
)
from edge.paths import PROJECT_ROOT
from edge.types import Urgency

DEVICE = "0123456789abcdef"


# -- topics ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern, topic, expected", [
    ("edge/+/status", "edge/abc/status", True),
    ("edge/+/status", "edge/abc/telemetry", False),
    ("edge/+/status", "edge/abc/def/status", False),
    ("edge/#", "edge", True),  # '#' also matches the parent level
    ("edge/#", "edge/a/b/c", True),
    ("edge/#", "other/a", False),
    ("#", "edge/a", True),
    ("#", "$SYS/broker/uptime", False),  # wildcards at the start never match $ topics
    ("+/broker/uptime", "$SYS/broker/uptime", False),
    ("$SYS/#", "$SYS/broker/uptime", True),
    ("edge/+", "edge/", True),  # '+' matches an empty level
    ("edge/+/+", "edge/a", False),
    ("edge/a", "edge/a", True),
    ("edge/a", "edge/a/", False),
    ("edge/A", "edge/a", False),  # case-sensitive
    ("+/+", "/x", True),
])
def test_topic_matching(pattern, topic, expected):
    assert topic_matches(pattern, topic) is expected


@pytest.mark.parametrize("pattern", ["edge/#/x", "edge/a#", "edge/a+/b", "", "a/\0"])
def test_invalid_filters_are_refused(pattern):
    with pytest.raises(TopicError):
        check_topic_filter(pattern)


def test_topic_layout_and_prefix_rules():
    topics = Topics.for_device("clinic/{device_id}", DEVICE, "clinic/fleet/cmd")
    assert (topics.status, topics.telemetry, topics.results, topics.cmd, topics.cmd_reply) == (
        f"clinic/{DEVICE}/status", f"clinic/{DEVICE}/telemetry", f"clinic/{DEVICE}/results",
        f"clinic/{DEVICE}/cmd", f"clinic/{DEVICE}/cmd/reply")
    assert all_devices_prefix("clinic/{device_id}") == "clinic/+"
    assert device_of("clinic/{device_id}", f"clinic/{DEVICE}/status") == DEVICE
    assert device_of("clinic/{device_id}", "other/x/status") is None
    for bad in ("edge/dev-{device_id}", "edge/+/x", "/edge", "edge/", "$SYS/{device_id}", "a/{device_id}/{device_id}",
                "edge/{other}"):
        with pytest.raises(TopicError):
            check_prefix_template(bad)
    with pytest.raises(ConfigError, match="mqtt.topic_prefix"):
        load_settings(None, {"mqtt": {"topic_prefix": "edge/#"}})


# -- payloads ----------------------------------------------------------------------------------------------------

def test_payload_is_the_allow_list_and_hides_identifying_detail():
    result = make_result(Urgency.URGENT, label="mel", abstained=True)
    payload = result_payload(result, DEVICE)
    assert set(payload) == ALLOWED_KEYS - {"age_band", "body_site"}
    assert payload["event_id"] != result.id and len(payload["event_id"]) == 32
    assert payload["time"].endswith(":00Z") and payload["confidence"] == 0.877
    assert payload["urgency"] == "urgent" and payload["abstained"] is True and payload["schema"] == 1
    text = json.dumps(payload)
    for secret in ("Jane", "10.0.0.7", "Melanocytic", result.id, "ab" * 32):
        assert secret not in text
    assert result_payload(result, DEVICE)["event_id"] != payload["event_id"]  # random per message


def test_minute_floor_rounds_down():
    # 1_700_000_000 is 2023-11-14T22:13:20Z
    assert minute_floor_iso(1_700_000_039.9) == "2023-11-14T22:13:00Z"  # 22:13:59.9
    assert minute_floor_iso(1_700_000_040.0) == "2023-11-14T22:14:00Z"


def test_age_band_and_body_site_only_when_enabled_and_in_vocabulary():
    result = make_result()
    assert "age_band" not in result_payload(result, DEVICE, age_band="40-59")
    enabled = result_payload(result, DEVICE, include_age_band=True, include_body_site=True, age_band="40-59",
                             body_site="trunk")
    assert enabled["age_band"] == "40-59" and enabled["body_site"] == "trunk"
    free_text = result_payload(result, DEVICE, include_age_band=True, include_body_site=True, age_band="47",
                               body_site="left shoulder, near tattoo")
    assert "age_band" not in free_text and "body_site" not in free_text


def test_schema_file_in_repo_matches_the_code():
    on_disk = json.loads((PROJECT_ROOT / "schemas" / "result.v1.json").read_text())
    assert on_disk == json_schema()
    assert on_disk["additionalProperties"] is False and set(on_disk["properties"]) == ALLOWED_KEYS


# -- outbox ------------------------------------------------------------------------------------------------------

def test_outbox_keeps_order_and_survives_reopen(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite", cap=100)
    for index in range(5):
        outbox.enqueue(f"e{index}", b"p%d" % index, Urgency.ROUTINE)
    rows = outbox.pending(0, 3)
    assert [r.event_id for r in rows] == ["e0", "e1", "e2"]
    outbox.remove([rows[1].seq])
    assert [r.event_id for r in outbox.pending(rows[0].seq, 10)] == ["e2", "e3", "e4"]
    outbox.close()
    reopened = Outbox(tmp_path / "o.sqlite", cap=100)
    assert reopened.event_ids() == ["e0", "e2", "e3", "e4"] and reopened.depth() == 4
    journal = reopened._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"


def test_outbox_depth_stays_exact_when_a_purge_lands_inside_an_acknowledgement(tmp_path):
    """remove() (the MQTT thread) has committed its deletes and not yet counted them when clear() (a purge
    command) runs: the depth must end at the number of rows, not below zero."""
    import threading

    outbox = Outbox(tmp_path / "o.sqlite", cap=100)
    for i in range(5):
        outbox.enqueue(f"e{i}", b"{}", Urgency.ROUTINE)
    committed, resume = threading.Event(), threading.Event()

    class PauseAfterCommit:  # the sender connection, paused right after remove()'s COMMIT
        def __init__(self, connection):
            self.connection = connection

        def execute(self, sql, *args):
            result = self.connection.execute(sql, *args)
            if sql == "COMMIT":
                committed.set()
                resume.wait(5)
            return result

    real = outbox._sender
    outbox._sender = PauseAfterCommit(real)
    remover = threading.Thread(target=outbox.remove, args=([row.seq for row in outbox.pending(0, 10)],))
    remover.start()
    assert committed.wait(5)
    purger = threading.Thread(target=outbox.clear)
    purger.start()
    purger.join(0.3)  # the purge runs now if nothing stops it
    resume.set()
    remover.join(5)
    purger.join(5)
    outbox._sender = real
    assert outbox.depth() == len(outbox.event_ids()) == 0
    outbox.close()


def test_outbox_cap_drops_oldest_routine_first_never_urgent(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite", cap=4)
    for event_id, urgency in [("u1", Urgency.URGENT), ("r1", Urgency.ROUTINE), ("s1", Urgency.SOON),
                              ("r2", Urgency.ROUTINE)]:
        assert outbox.enqueue(event_id, b"x", urgency)
    assert outbox.enqueue("r3", b"x", Urgency.ROUTINE)  # full: the oldest routine (r1) goes
    assert outbox.event_ids() == ["u1", "s1", "r2", "r3"]
    assert outbox.enqueue("s2", b"x", Urgency.SOON)  # a soon result displaces a routine one (r2)
    assert outbox.enqueue("u2", b"x", Urgency.URGENT)  # urgent displaces the last routine (r3)
    assert outbox.event_ids() == ["u1", "s1", "s2", "u2"]
    assert not outbox.enqueue("r4", b"x", Urgency.ROUTINE)  # nothing ranks lower: the new routine one is dropped
    assert outbox.enqueue("u3", b"x", Urgency.URGENT)  # displaces the oldest soon (s1)
    assert outbox.enqueue("u4", b"x", Urgency.URGENT)  # displaces s2
    assert outbox.enqueue("u5", b"x", Urgency.URGENT)  # only urgent left: kept above the cap
    assert outbox.event_ids() == ["u1", "u2", "u3", "u4", "u5"] and outbox.depth() == 5
    assert outbox.dropped == 6
    assert not outbox.enqueue("s3", b"x", Urgency.SOON)


# -- signatures and command checks -------------------------------------------------------------------------------

@pytest.fixture
def admin_key():
    return Ed25519PrivateKey.generate()


def envelope(target=DEVICE, command="status", args=None, issued=None, ttl=300, nonce=None):
    issued = int(time.time()) if issued is None else issued
    return {"command": command, "args": args or {}, "target": target, "nonce": nonce or os.urandom(12).hex(),
            "issued_at": issued, "expires_at": issued + ttl}


def test_canonical_bytes_ignore_order_and_whitespace_but_not_content(admin_key):
    signed = sign_envelope(envelope(args={"é": 1}), admin_key)
    reordered = json.loads(json.dumps(dict(reversed(list(signed.items()))), indent=3))
    keys = {key_id(admin_key.public_key()): admin_key.public_key()}
    assert verify_envelope(reordered, keys) == key_id(admin_key.public_key())
    assert canonical_bytes(signed) == canonical_bytes(reordered)
    assert "é".encode() in canonical_bytes(signed)  # ensure_ascii=False, UTF-8
    tampered = {**signed, "args": {"é": 2}}
    with pytest.raises(EdgeError, match="bad signature"):
        verify_envelope(tampered, keys)


def test_admin_keys_from_base64_or_pem(tmp_path, admin_key):
    pem = tmp_path / "admin.pub.pem"
    pem.write_bytes(admin_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo))
    b64 = public_key_b64(admin_key.public_key())
    keys = load_admin_keys([b64, str(pem)])
    assert list(keys) == [key_id(admin_key.public_key())]
    assert load_public_key(b64).public_bytes_raw() == admin_key.public_key().public_bytes_raw()
    with pytest.raises(ConfigError, match="admin_keys"):
        load_public_key(base64.b64encode(b"short").decode())


def _mixed_order(raw: bytes) -> bytes:
    """A real public key plus the point of order 2, (0, -1): (x, y) becomes (-x, -y)."""
    p = 2**255 - 19
    y, sign = int.from_bytes(raw, "little") & ((1 << 255) - 1), raw[31] >> 7
    return ((p - y) | ((1 - sign) << 255)).to_bytes(32, "little")


# small order: all zero bytes (what a pasted placeholder decodes to), the identity, two points of order 8
# (from libsodium's blocklist), and p - 1 (order 2); then a non-canonical y (= p, which is 0 again)
WEAK_KEYS = [bytes(32), b"\x01" + bytes(31),
             bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
             bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
             (2**255 - 20).to_bytes(32, "little"), (2**255 - 19).to_bytes(32, "little")]


def test_weak_admin_keys_are_refused_because_they_accept_forged_signatures(tmp_path, admin_key):
    """With the identity as an admin key, the signature identity || zeros verified for any command."""
    real = admin_key.public_key().public_bytes_raw()
    for raw in WEAK_KEYS + [_mixed_order(real)]:
        with pytest.raises(ConfigError, match="weak Ed25519 key"):
            load_public_key(base64.b64encode(raw).decode())
    pem = tmp_path / "identity.pub.pem"
    identity = serialization.load_der_public_key(  # SubjectPublicKeyInfo for Ed25519 + the 32 raw bytes
        bytes.fromhex("302a300506032b6570032100") + WEAK_KEYS[1])
    pem.write_bytes(identity.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(ConfigError, match="weak Ed25519 key"):
        load_admin_keys([str(pem)])
    for _ in range(20):  # keys from key generation are never weak
        load_public_key(public_key_b64(Ed25519PrivateKey.generate().public_key()))


def test_private_key_file_is_0600_and_never_overwritten(tmp_path):
    path = tmp_path / "keys" / "admin.key"
    public, kid = admin.keygen(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(base64.b64decode(public)) == 32 and len(kid) == 16
    with pytest.raises(EdgeError, match="refusing to overwrite"):
        write_private_key(path, Ed25519PrivateKey.generate())


@pytest.fixture
def verifier(tmp_path, admin_key):
    nonces = NonceStore(tmp_path / "nonces.sqlite")
    yield CommandVerifier(DEVICE, {key_id(admin_key.public_key()): admin_key.public_key()}, nonces,
                          clock_skew_s=60, max_lifetime_s=3600)
    nonces.close()


def raw(value) -> bytes:
    return json.dumps(value).encode()


def test_verifier_accepts_a_good_command_once(verifier, admin_key):
    signed = sign_envelope(envelope(), admin_key)
    command = verifier.verify(raw(signed))
    assert command.command == "status" and command.target == DEVICE
    with pytest.raises(CommandRejected, match="replayed"):
        verifier.verify(raw(signed))
    assert verifier.verify(raw(sign_envelope(envelope(target="fleet"), admin_key))).target == "fleet"


@pytest.mark.parametrize("make, reason", [
    (lambda key: envelope(), "unsigned"),
    (lambda key: {**sign_envelope(envelope(), key), "command": "restart"}, "bad signature"),
    (lambda key: sign_envelope(envelope(), Ed25519PrivateKey.generate()), "does not trust"),
    (lambda key: {k: v for k, v in sign_envelope(envelope(), Ed25519PrivateKey.generate()).items() if k != "key_id"},
     "bad signature"),
    (lambda key: sign_envelope(envelope(issued=int(time.time()) - 1000, ttl=300), key), "expired"),
    (lambda key: sign_envelope(envelope(issued=int(time.time()) + 1000), key), "not yet valid"),
    (lambda key: sign_envelope(envelope(ttl=7200), key), "exceeds"),
    (lambda key: sign_envelope(envelope(target="ffffffffffffffff"), key), "wrong target"),
    (lambda key: sign_envelope(envelope(command="format_disk"), key), "unknown command"),
    (lambda key: {**sign_envelope(envelope(), key), "issued_at": "yesterday"}, "must be an integer"),
    (lambda key: {**sign_envelope(envelope(), key), "args": []}, "must be an object"),
    (lambda key: {**sign_envelope(envelope(), key), "extra": 1}, "unknown field"),
    (lambda key: {k: v for k, v in sign_envelope(envelope(), key).items() if k != "target"}, "missing field"),
    (lambda key: sign_envelope(envelope(nonce="short"), key), "nonce must be"),
    (lambda key: [1, 2], "JSON object"),
])
def test_verifier_rejects_with_a_reason(verifier, admin_key, make, reason):
    with pytest.raises(CommandRejected, match=reason):
        verifier.verify(raw(make(admin_key)))
    assert len(verifier.nonces) == 0  # a rejected command never burns a nonce


def test_verifier_rejects_non_json_and_oversized(verifier, admin_key):
    with pytest.raises(CommandRejected, match="not UTF-8 JSON"):
        verifier.verify(b"\xff\xfe not json")
    with pytest.raises(CommandRejected, match="not UTF-8 JSON"):  # more digits than Python converts
        verifier.verify(b'{"issued_at": ' + b"9" * 5000 + b"}")
    with pytest.raises(CommandRejected, match="not valid Unicode"):  # a lone surrogate cannot be signed
        verifier.verify(raw({**sign_envelope(envelope(), admin_key), "args": {"x": "\ud800"}}))
    big = sign_envelope(envelope(args={"pad": "x" * MAX_COMMAND_BYTES}), admin_key)
    with pytest.raises(CommandRejected, match="too large"):
        verifier.verify(raw(big))
    with pytest.raises(NotForThisDevice):
        verifier.verify(raw(sign_envelope(envelope(target="0" * 16), admin_key)))


def test_a_crash_while_checking_a_command_becomes_a_rejection(caplog):
    """Whatever goes wrong checking a message, the reply says so and nothing escapes into paho's thread
    (which would drop the connection, and the broker would redeliver the message forever)."""

    class BrokenVerifier:
        def verify(self, raw_message: bytes):
            raise KeyError("a bug")

    reply = actions.respond(b"{}", verifier=BrokenVerifier(), runtime=types.SimpleNamespace(device_id=DEVICE),
                            fleet=False)
    assert reply == {"ok": False, "error": "malformed: the device could not check this command", "device_id": DEVICE}
    assert "could not be checked" in caplog.text


def test_raising_the_clock_skew_never_revives_a_used_command(tmp_path, admin_key):
    """set_config can raise clock_skew_s on a running device: a command whose nonce was used must stay refused
    for as long as any allowed skew could still let it through."""
    now = [1_000_000.0]
    nonces = NonceStore(tmp_path / "nonces.sqlite")
    verifier = CommandVerifier(DEVICE, {key_id(admin_key.public_key()): admin_key.public_key()}, nonces,
                               clock_skew_s=300, max_lifetime_s=3600, clock=lambda: now[0])
    signed = raw(sign_envelope(envelope(issued=int(now[0]), ttl=60), admin_key))
    assert verifier.verify(signed).command == "status"
    verifier.clock_skew_s = 3600  # what apply_live does after set_config mqtt.commands.clock_skew_s
    now[0] += 361  # past expires_at + the old skew: the old code had forgotten the nonce by now
    verifier.nonces.claim("x" * 16, forget_after=now[0] + 60, now=now[0])  # any claim prunes forgotten rows
    with pytest.raises(CommandRejected, match="replayed"):
        verifier.verify(signed)
    nonces.close()
    field = MqttCommandSettings.model_fields["clock_skew_s"]
    assert MAX_CLOCK_SKEW_S == next(rule.le for rule in field.metadata if getattr(rule, "le", None) is not None)


def test_nonces_persist_and_are_pruned_after_expiry(tmp_path):
    store = NonceStore(tmp_path / "n.sqlite")
    assert store.claim("n" * 16, forget_after=100.0, now=50.0)
    store.close()
    store = NonceStore(tmp_path / "n.sqlite")
    assert not store.claim("n" * 16, forget_after=100.0, now=60.0)  # still remembered after a restart
    assert store.claim("m" * 16, forget_after=300.0, now=200.0)  # prunes the first
    assert len(store) == 1
    store.close()


# -- remote settings ------------------------------------------------------------------------------------------------

def test_remote_settings_validate_persist_and_load_over_the_base(tmp_path):
    base = load_settings(None, {"state_dir": str(tmp_path), "mqtt": {"host": "h", "password": "s3cret"}})
    update = remote_config.check_update({"log_level": "DEBUG", "mqtt.telemetry_interval_s": 5,
                                         "camera": {"fps": 5}})
    new = remote_config.apply(base, update)
    assert remote_config.changed_paths(base, new) == ["camera.fps", "log_level", "mqtt.telemetry_interval_s"]
    remote_config.persist(tmp_path, update)
    assert stat.S_IMODE(remote_config.overlay_path(tmp_path).stat().st_mode) == 0o600
    loaded = remote_config.with_overlay(base)
    assert (loaded.log_level, loaded.camera.fps, loaded.mqtt.password.get_secret_value()) == ("DEBUG", 5.0, "s3cret")
    with pytest.raises(ConfigError, match=r"mqtt.telemetry_interval_s: Input should be greater"):
        remote_config.apply(base, remote_config.check_update({"mqtt": {"telemetry_interval_s": -1}}))
    with pytest.raises(ConfigError, match="camera.nope: unknown setting"):
        remote_config.apply(base, remote_config.check_update({"camera.nope": 1}))
    with pytest.raises(ConfigError, match="local configuration"):
        remote_config.check_update({"state_dir": "/tmp/elsewhere"})
    redacted = remote_config.redacted(loaded)
    assert redacted["mqtt"]["password"] == "<redacted>" and "s3cret" not in json.dumps(redacted)


def test_get_config_hides_credentials_inside_urls(tmp_path):
    settings = load_settings(None, {"state_dir": str(tmp_path), "camera": {
        "source": "gst:rtspsrc location=rtsp://admin:Cam3raPw@10.0.0.9/stream ! decodebin ! appsink"}})
    shown = remote_config.redacted(settings)["camera"]["source"]
    assert "Cam3raPw" not in shown and "admin" not in shown and "rtsp://<redacted>@10.0.0.9/stream" in shown


def test_an_overlay_key_that_may_not_be_set_remotely_is_ignored_at_start(tmp_path, caplog):
    """An overlay written before the allow-list (or by hand) cannot point the device at another broker."""
    base = load_settings(None, {"state_dir": str(tmp_path), "mqtt": {"host": "broker.clinic.lan"}})
    remote_config.overlay_path(tmp_path).write_text(
        'log_level = "DEBUG"\n[mqtt]\nhost = "attacker.example"\ntelemetry_interval_s = 5.0\n')
    loaded = remote_config.with_overlay(base)
    assert (loaded.mqtt.host, loaded.log_level, loaded.mqtt.telemetry_interval_s) == \
        ("broker.clinic.lan", "DEBUG", 5.0)
    assert "ignoring mqtt.host" in caplog.text


def test_a_broken_overlay_is_ignored_not_fatal(tmp_path):
    base = load_settings(None, {"state_dir": str(tmp_path)})
    remote_config.overlay_path(tmp_path).write_text('[camera]\nfps = "fast"\n')
    assert remote_config.with_overlay(base).camera.fps == base.camera.fps


# -- device id, telemetry, backoff, admin helpers -------------------------------------------------------------------

def test_device_id_is_random_stable_and_repaired(tmp_path):
    first = device_id(tmp_path)
    assert first == device_id(tmp_path) and len(first) == 16
    assert first != device_id(tmp_path / "other")
    (tmp_path / "device_id").write_text("garbage\n")
    assert device_id(tmp_path) not in (first, "garbage")


def test_cpu_temperature_prefers_the_cpu_zone(tmp_path):
    for name, kind, temp in [("thermal_zone0", "acpitz", "30000"), ("thermal_zone1", "cpu-thermal", "51234"),
                             ("thermal_zone2", "broken", "n/a")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "type").write_text(kind + "\n")
        (tmp_path / name / "temp").write_text(temp + "\n")
    assert cpu_temperature_c(tmp_path) == 51.2
    assert cpu_temperature_c(tmp_path / "missing") is None
    assert memory_rss_mb() > 1


def test_telemetry_names_its_fields_and_leaves_out_paths_and_camera_specs():
    health = {"status": "degraded", "uptime_s": 5.0, "frames": 10, "classifications": 2, "rejects": {"blur": 1},
              "camera": {"spec": "file:/home/alice/photos", "state": "ok"},
              "inference": {"error": "no model pack at /home/alice/models/x: model.json not found"}}
    telemetry = telemetry_payload(health, fps=1.5, queue_depth=3, dropped=0, now=1_700_000_000.4)
    assert telemetry["model_error"] == "no model pack at <path>: model.json not found"
    assert telemetry["camera_state"] == "ok" and telemetry["time"] == "2023-11-14T22:13:20Z"
    assert "alice" not in json.dumps(telemetry)


def test_frame_rate():
    now = [0.0]
    rate = FrameRate(clock=lambda: now[0])
    assert rate.update(0) == 0.0
    now[0] = 2.0
    assert rate.update(30) == 15.0


def test_backoff_grows_exponentially_with_jitter_and_resets():
    low, high = Backoff(1.0, 8.0, rng=lambda: 0.0), Backoff(1.0, 8.0, rng=lambda: 0.999999)
    assert [round(low.next_delay(), 2) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [round(high.next_delay(), 2) for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    low.reset()
    assert low.next_delay() == 0.5


def test_admin_argument_pairs_and_table():
    assert admin.parse_pairs(["level=DEBUG", "mqtt.telemetry_interval_s=30", "flag=true"]) == {
        "level": "DEBUG", "mqtt.telemetry_interval_s": 30, "flag": True}
    with pytest.raises(EdgeError):
        admin.parse_pairs(["novalue"])
    table = admin.render_table({"a": admin.DeviceRow("a", status="online", queue_depth=3)})
    assert table.splitlines()[0].startswith("DEVICE") and "online" in table


def test_mqtt_settings_are_checked_before_any_connection(tmp_path):
    with pytest.raises(ConfigError, match="cert_file and key_file go together"):
        load_settings(None, {"mqtt": {"tls": {"cert_file": "/x.pem"}}})
    with pytest.raises(ConfigError, match="password or password_file"):
        load_settings(None, {"mqtt": {"password": "a", "password_file": "/p"}})
    from edge.mqtt.publisher import MqttService

    missing_ca = load_settings(None, {"state_dir": str(tmp_path), "mqtt": {"host": "h", "tls": {"ca_file": "/no.pem"}}})
    with pytest.raises(ConfigError, match="mqtt.tls.ca_file"):
        MqttService(missing_ca)
    bad_key = load_settings(None, {"state_dir": str(tmp_path), "mqtt": {"host": "h",
                                                                         "commands": {"admin_keys": ["nope"]}}})
    with pytest.raises(ConfigError, match="admin_keys"):
        MqttService(bad_key)
    assert not load_settings().mqtt.enabled  # MQTT is off by default
