"""A damaged SQLite file (outbox, nonces, history) is set aside and replaced; it never stops the device."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time

import pytest
from mqtt_broker import Listener, broker, device_settings, make_result  # noqa: F401

from edge import sqlite_files
from edge.mqtt.nonces import NonceStore
from edge.mqtt.outbox import OUTBOX_FILE, Outbox
from edge.mqtt.publisher import MqttService
from edge.store import History
from edge.types import Urgency


def use_outbox(path):
    outbox = Outbox(path, cap=10)
    assert outbox.enqueue("e1", b"{}", Urgency.URGENT) and outbox.depth() == 1
    return outbox


def use_nonces(path):
    nonces = NonceStore(path)
    assert nonces.claim("n" * 32, forget_after=time.time() + 60, now=time.time()) and len(nonces) == 1
    return nonces


def use_history(path):
    history = History(path)
    history.record(make_result())
    assert len(history.entries()) == 1
    return history


STORES = pytest.mark.parametrize("use", [use_outbox, use_nonces, use_history], ids=["outbox", "nonces", "history"])


def aside_files(path):
    return sorted(p.name for p in path.parent.iterdir() if ".corrupt-" in p.name)


@STORES
def test_a_file_that_is_not_a_database_is_kept_aside_and_replaced(tmp_path, caplog, use):
    path = tmp_path / "state" / "store.sqlite"
    path.parent.mkdir()
    garbage = os.urandom(8192)
    path.write_bytes(garbage)
    store = use(path)  # works, on a fresh file
    store.close()
    (aside,) = aside_files(path)
    assert (path.parent / aside).read_bytes() == garbage  # nothing is deleted: the old file can be examined
    assert f"moved it to {aside}" in caplog.text and any(r.levelno == logging.ERROR for r in caplog.records)


def test_damaged_pages_are_caught_by_the_integrity_check_at_open(tmp_path):
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, cap=10_000)
    for i in range(2000):
        outbox.enqueue(f"event-{i}", os.urandom(200), Urgency.ROUTINE)
    outbox.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 64 * 1024
    data[8192:40960] = os.urandom(32768)  # the header is intact: only the b-tree pages are garbage
    path.write_bytes(bytes(data))
    reopened = use_outbox(path)
    assert reopened.depth() == 1
    reopened.close()
    assert len(aside_files(path)) == 1


def test_a_healthy_file_is_opened_as_it_is(tmp_path):
    path = tmp_path / "outbox.sqlite"
    use_outbox(path).close()
    again = Outbox(path, cap=10)
    assert again.event_ids() == ["e1"]
    again.close()
    assert aside_files(path) == []


def test_a_path_that_cannot_be_opened_is_an_error_not_damage(tmp_path):
    """Only corruption sets a file aside: a path SQLite cannot open at all (here a folder) is raised."""
    folder = tmp_path / "store.sqlite"
    folder.mkdir()
    with pytest.raises(sqlite3.OperationalError):
        sqlite_files.connect(folder)
    assert folder.is_dir() and aside_files(folder) == []


def test_the_mqtt_service_starts_and_delivers_with_a_damaged_outbox(tmp_path, broker):  # noqa: F811
    settings = device_settings(tmp_path / "state", broker)
    settings.state_dir.mkdir(parents=True)
    (settings.state_dir / OUTBOX_FILE).write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    listener = Listener(broker, "edge/+/results")
    service = MqttService(settings, health=lambda: {"frames": 0, "uptime_s": 1.0})
    try:
        service.start()
        service.publish_result(make_result(Urgency.URGENT, label="mel"))
        listener.wait_for(lambda: listener.on("/results"), what="the result")
        assert json.loads(listener.on("/results")[0].payload)["urgency"] == "urgent"
    finally:
        service.stop()
        listener.close()


def _on_disk(path) -> bytes:
    """Every byte SQLite keeps for ``path``: the file and its write-ahead log."""
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def test_purge_and_an_erased_note_leave_nothing_readable_while_the_database_stays_open(tmp_path):
    """The daemon keeps its connections open: a purge left every note and result id in the -wal file."""
    history = History(tmp_path / "history.sqlite")
    results = [make_result() for _ in range(3)]
    for number, result in enumerate(results):
        history.record(result)
        history.set_note(result.id, f"SECRETNOTE{number} Amina, village Kpalime")
    history.set_note(results[0].id, "")  # the worker erases one note
    assert b"SECRETNOTE0" not in _on_disk(history.path) and b"SECRETNOTE1" in _on_disk(history.path)
    history.set_note(results[2].id, "follow-up booked")  # replaced, not erased: the name must go as well
    assert b"SECRETNOTE2" not in _on_disk(history.path) and b"follow-up booked" in _on_disk(history.path)
    assert history.purge() == 3
    stored = _on_disk(history.path)
    assert b"SECRETNOTE" not in stored and not any(r.id.encode() in stored for r in results)
    history.close()

    outbox = Outbox(tmp_path / OUTBOX_FILE, cap=100)
    ids = [f"event-{n:04d}-0123456789abcdef" for n in range(5)]
    for event_id in ids:
        outbox.enqueue(event_id, b'{"label": "nv"}', Urgency.ROUTINE)
    assert outbox.clear() == 5
    stored = _on_disk(tmp_path / OUTBOX_FILE)
    assert not any(event_id.encode() in stored for event_id in ids)
    outbox.close()


def test_a_purge_also_deletes_the_set_aside_copies_of_a_damaged_history(tmp_path):
    """A damaged history file is kept aside with its notes; neither purge (the history screen's, or the
    administrator's purge_local_data, which runs even when health-worker mode is now off) deleted it."""
    from edge.config import load_settings
    from edge.daemon import Daemon

    path = tmp_path / "history.sqlite"

    def a_set_aside_history_with_a_note():
        history = History(path)
        result = make_result()
        history.record(result)
        history.set_note(result.id, "SECRETNOTE Amina, village Kpalime")
        history.close()
        sqlite_files.set_aside(path)  # what opening it does when it is damaged
        assert len(aside_files(path)) == 1 and not path.exists()

    a_set_aside_history_with_a_note()
    history = History(path)
    assert history.purge() == 0 and aside_files(path) == []
    history.close()
    path.unlink()

    a_set_aside_history_with_a_note()
    settings = load_settings(None, {"state_dir": str(tmp_path), "camera": {"source": "none"},
                                    "kiosk": {"enabled": False}, "assistant": {"enabled": False},
                                    "inference": {"model_dir": str(tmp_path / "no-pack")}})
    daemon = Daemon(settings)
    try:
        assert daemon._purge_local_data() == {"history": 0}
    finally:
        daemon.close()
    assert not any(b"SECRETNOTE" in p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert aside_files(path) == [] and not path.exists()  # no new history made by the purge either

    # the outbox's set-aside copies hold queued results: its purge deletes them too
    outbox_path = tmp_path / OUTBOX_FILE
    use_outbox(outbox_path).close()
    sqlite_files.set_aside(outbox_path)
    outbox = Outbox(outbox_path, cap=10)
    assert len(aside_files(outbox_path)) == 1
    outbox.clear()
    outbox.close()
    assert aside_files(outbox_path) == []


def test_results_queued_after_the_outbox_file_was_deleted_are_not_lost(tmp_path, caplog):
    """Both connections kept writing to the unlinked file: everything queued afterwards vanished at the next
    start, with no word in the log."""
    path = tmp_path / OUTBOX_FILE
    outbox = Outbox(path, cap=100)
    for n in range(3):
        outbox.enqueue(f"before-{n}", b"{}", Urgency.ROUTINE)
    for leftover in tmp_path.glob(OUTBOX_FILE + "*"):
        leftover.unlink()  # someone tidies the state folder while the daemon runs
    for n in range(2):
        outbox.enqueue(f"after-{n}", b"{}", Urgency.URGENT)
    assert "deleted or replaced while running" in caplog.text
    outbox.close()
    reopened = Outbox(path, cap=100)  # the next start
    assert reopened.event_ids() == ["before-0", "before-1", "before-2", "after-0", "after-1"]
    reopened.close()


def test_an_emptied_outbox_deleted_while_running_keeps_numbering_after_the_publishers_place(tmp_path):
    """Usually the outbox is empty when someone deletes it; a new file numbered from 1 again put new results
    below the publisher's last sent seq, so they were skipped until a reconnect, then sent out of order."""
    path = tmp_path / OUTBOX_FILE
    outbox = Outbox(path, cap=100)
    for n in range(5):
        outbox.enqueue(f"sent-{n}", b"{}", Urgency.ROUTINE)
    last_sent = max(row.seq for row in outbox.pending())
    outbox.remove([row.seq for row in outbox.pending()])  # delivered and acknowledged
    for leftover in tmp_path.glob(OUTBOX_FILE + "*"):
        leftover.unlink()
    outbox.enqueue("new-0", b"{}", Urgency.URGENT)
    assert [row.event_id for row in outbox.pending(after_seq=last_sent)] == ["new-0"]
    outbox.close()


def test_a_lowered_cap_trims_the_backlog_by_the_drop_policy(tmp_path):
    path = tmp_path / OUTBOX_FILE
    outbox = Outbox(path, cap=100)
    kinds = [Urgency.URGENT] * 3 + [Urgency.SOON] * 3 + [Urgency.ROUTINE] * 3
    for n, urgency in enumerate(kinds):
        outbox.enqueue(f"r{n}-{urgency.value}", b"{}", urgency)
    outbox.close()
    trimmed = Outbox(path, cap=4)  # mqtt.outbox_cap lowered, then a restart
    kept = trimmed.event_ids()
    assert trimmed.depth() == 4 and sum("urgent" in e for e in kept) == 3 and sum("soon" in e for e in kept) == 1
    assert not any("routine" in e for e in kept)  # the lowest rank goes first, urgent never
    trimmed.close()


def test_a_removal_that_fails_is_rolled_back_and_can_be_retried(tmp_path, monkeypatch):
    """On a full disk the delete fails at COMMIT: the transaction must not stay open (every later write
    would fail), and the rows stay to be removed on the next try."""
    outbox = Outbox(tmp_path / OUTBOX_FILE, cap=100)
    outbox.enqueue("one", b"{}", Urgency.ROUTINE)
    seqs = [row.seq for row in outbox.pending()]
    real = outbox._sender

    class FullDisk:
        in_transaction = False

        def execute(self, sql, *args):
            if sql == "COMMIT":
                raise sqlite3.OperationalError("database or disk is full")
            cursor = real.execute(sql, *args)
            FullDisk.in_transaction = real.in_transaction
            return cursor

    monkeypatch.setattr(outbox, "_sender", FullDisk())
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        outbox.remove(seqs)
    assert not real.in_transaction and outbox.depth() == 1
    monkeypatch.setattr(outbox, "_sender", real)
    outbox.remove(seqs)
    assert outbox.depth() == 0
    outbox.close()
