"""The conversation store against real SQLite files, including a real kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from memory import migrations
from memory.conversation_store import (
    ConversationStore,
    ReplyMetrics,
    SchemaError,
    default_db_path,
    title_from_text,
)
from tars_core.config import load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "tars.db"


@pytest.fixture
def store(db: Path) -> Iterator[ConversationStore]:
    with ConversationStore(db) as s:
        yield s


def test_open_sets_wal_fk_version_and_default_project(store: ConversationStore, db: Path) -> None:
    assert db.is_file()
    # synchronous 2 = FULL: a commit is on disk before the call returns.
    assert store.pragmas() == {
        "journal_mode": "wal",
        "synchronous": 2,
        "foreign_keys": 1,
        "user_version": migrations.latest_version(),
        "busy_timeout": 10000,
    }
    assert store.schema_version() == migrations.latest_version() >= 2
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == migrations.latest_version()
    projects = store.list_projects()
    assert [p.name for p in projects] == ["default"]
    assert store.default_project().id == projects[0].id
    assert store.recovered_on_open == 0


def test_default_db_path_is_in_the_data_dir() -> None:
    config = load_config()
    assert default_db_path(config) == config.data_dir / "tars.db"


def test_round_trip_messages_and_metrics(store: ConversationStore) -> None:
    cid = store.create_conversation(model="smol")
    store.add_message(cid, "system", "be brief")
    store.add_message(cid, "user", "What is WAL?\nsecond line")
    metrics = ReplyMetrics(
        ttft_ms=120.5,
        prompt_tokens=40,
        completion_tokens=12,
        tokens_per_s=130.0,
        total_ms=210.0,
        stages={"retrieval_ms": 7.0},
    )
    mid = store.add_message(cid, "assistant", "Write-ahead logging.", model="smol", metrics=metrics)

    msgs = store.messages(cid)
    assert [(m.role, m.text) for m in msgs] == [
        ("system", "be brief"),
        ("user", "What is WAL?\nsecond line"),
        ("assistant", "Write-ahead logging."),
    ]
    assert msgs[-1].id == mid and msgs[-1].metrics == metrics and msgs[-1].model == "smol"
    assert all(m.status == "complete" and m.completed_at is not None for m in msgs)
    assert [m.text for m in store.messages(cid, limit=2)] == [
        "What is WAL?\nsecond line",
        "Write-ahead logging.",
    ]
    conv = store.get_conversation(cid)
    assert conv is not None
    assert conv.title == "What is WAL?" and conv.message_count == 3 and conv.model == "smol"
    assert conv.updated_at >= conv.created_at
    assert store.get_message(mid) == msgs[-1]
    assert store.get_conversation(cid + 100) is None


def test_titles_auto_then_rename_wins(store: ConversationStore) -> None:
    cid = store.create_conversation()
    store.add_message(cid, "user", "## " + "word " * 40)
    conv = store.get_conversation(cid)
    assert conv is not None and conv.title.startswith("word word") and conv.title.endswith("…")
    assert len(conv.title) <= 60
    store.rename_conversation(cid, "  My plans ")
    store.add_message(cid, "user", "another question")
    conv = store.get_conversation(cid)
    assert conv is not None and conv.title == "My plans"
    with pytest.raises(LookupError):
        store.rename_conversation(9999, "x")


def test_title_from_text() -> None:
    assert title_from_text("\n\n  > hello   there \nmore") == "hello there"
    assert title_from_text("```\n") == ""
    assert title_from_text("a" * 100, max_len=10) == "a" * 9 + "…"


def test_list_orders_by_activity_and_filters_projects(store: ConversationStore) -> None:
    first = store.create_conversation()
    second = store.create_conversation()
    other = store.create_project("work", "the day job")
    third = store.create_conversation(project_id=other.id)
    assert [c.id for c in store.list_conversations()] == [third, second, first]
    store.add_message(first, "user", "bump")  # activity moves it to the top
    listed = store.list_conversations()
    assert [c.id for c in listed] == [first, third, second]
    assert [c.message_count for c in listed] == [1, 0, 0]
    assert [c.id for c in store.list_conversations(limit=1)] == [first]
    default_id = store.default_project().id
    assert [c.id for c in store.list_conversations(project_id=default_id)] == [first, second]
    assert [c.id for c in store.list_conversations(project_id=other.id)] == [third]
    latest = store.latest_conversation()
    assert latest is not None and latest.id == first
    with pytest.raises(LookupError):
        store.create_conversation(project_id=12345)
    with pytest.raises(LookupError):
        store.add_message(12345, "user", "nowhere")


def test_rejects_bad_role_and_status(store: ConversationStore) -> None:
    cid = store.create_conversation()
    with pytest.raises(ValueError, match="role"):
        store.add_message(cid, "robot", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="begin_reply"):
        store.add_message(cid, "assistant", "x", status="streaming")
    mid = store.begin_reply(cid, "m")
    with pytest.raises(ValueError, match="final status"):
        store.finish_reply(mid, "x", status="streaming")
    with pytest.raises(LookupError):
        store.finish_reply(mid + 100, "x")


def test_streaming_reply_lifecycle(store: ConversationStore) -> None:
    cid = store.create_conversation()
    store.add_message(cid, "user", "count")
    mid = store.begin_reply(cid, "smol")
    m = store.get_message(mid)
    assert m is not None and (m.status, m.text, m.completed_at) == ("streaming", "", None)
    assert store.checkpoint_reply(mid, "one two")
    assert store.get_message(mid).text == "one two"  # type: ignore[union-attr]
    store.finish_reply(mid, "one two three", "cancelled", ReplyMetrics(completion_tokens=3))
    m = store.get_message(mid)
    assert m is not None and (m.status, m.text) == ("cancelled", "one two three")
    assert m.completed_at is not None and m.metrics == ReplyMetrics(completion_tokens=3)
    assert not store.checkpoint_reply(mid, "late")  # finished replies are not overwritten
    assert store.get_message(mid).text == "one two three"  # type: ignore[union-attr]


def test_begin_turn_stores_the_message_and_the_streaming_reply_at_once(
    store: ConversationStore, db: Path
) -> None:
    project = store.create_project("lighthouse").id
    cid, user_id, reply_id = store.begin_turn(
        None, "Where is the spare key?", "smol", project_id=project
    )
    # Another connection sees all three rows: they were committed together.
    with ConversationStore(db) as other:
        conv = other.get_conversation(cid)
        assert conv is not None and conv.project_id == project
        assert conv.title == "Where is the spare key?"
        user, reply = other.get_message(user_id), other.get_message(reply_id)
        assert user is not None and (user.role, user.status) == ("user", "complete")
        assert reply is not None and (reply.role, reply.status) == ("assistant", "streaming")
    again = store.begin_turn(cid, "And the other one?", "smol")
    assert again[0] == cid and again[1] > reply_id
    with pytest.raises(LookupError):
        store.begin_turn(cid + 99, "no such conversation", None)
    with pytest.raises(LookupError):
        store.begin_turn(None, "no such project", None, project_id=project + 99)
    # Nothing half-written by the failures: the conversation holds the two turns only.
    assert len(store.messages(cid)) == 4
    assert len(store.list_conversations()) == 1


def test_nonfinite_metrics_are_dropped_not_fatal(store: ConversationStore) -> None:
    cid = store.create_conversation()
    mid = store.begin_reply(cid, "m")
    store.finish_reply(mid, "x", metrics=ReplyMetrics(ttft_ms=5.0, tokens_per_s=float("inf")))
    assert store.get_message(mid).metrics == ReplyMetrics(ttft_ms=5.0)  # type: ignore[union-attr]


def test_reopen_recovers_orphaned_reply_but_not_a_live_one(db: Path) -> None:
    writer = ConversationStore(db)
    cid = writer.create_conversation()
    mid = writer.begin_reply(cid, "m")
    writer.checkpoint_reply(mid, "partial")
    # Another store while the writer is open: the reply is still being written.
    reader = ConversationStore(db)
    assert reader.recovered_on_open == 0
    assert reader.get_message(mid).status == "streaming"  # type: ignore[union-attr]
    writer.close()  # the writer goes away without finishing
    reopened = ConversationStore(db)
    assert reopened.recovered_on_open == 1
    m = reopened.get_message(mid)
    assert m is not None and (m.status, m.text) == ("cancelled", "partial")
    assert m.completed_at is not None
    assert reopened.recover_interrupted() == 0
    reader.close()
    reopened.close()


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from memory.conversation_store import ConversationStore

    store = ConversationStore(Path(sys.argv[1]))
    cid = store.create_conversation(model="smol")
    print("conv", cid, flush=True)
    for i in range(3):
        mid = store.add_message(cid, "user", f"question {i}")
        print("msg", mid, flush=True)
        mid = store.add_message(cid, "assistant", f"answer {i}", model="smol")
        print("msg", mid, flush=True)
    mid = store.add_message(cid, "user", "tell me a long story")
    print("msg", mid, flush=True)
    reply = store.begin_reply(cid, "smol")
    print("reply", reply, flush=True)
    i = 0
    while True:
        i += 1
        store.checkpoint_reply(reply, f"once upon a time {i}")
        print("ckpt", i, flush=True)
        time.sleep(0.01)
    """
)


def test_kill_9_mid_reply_keeps_acknowledged_writes(db: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert child.stdout is not None
    acked: list[list[str]] = []
    try:
        for line in child.stdout:
            acked.append(line.split())
            if acked[-1][0] == "ckpt" and int(acked[-1][1]) >= 5:
                break
        reply = next(int(a[1]) for a in acked if a[0] == "reply")
        # While the child lives, opening the database must not steal its reply.
        with ConversationStore(db) as live:
            assert live.recovered_on_open == 0
            assert live.get_message(reply).status == "streaming"  # type: ignore[union-attr]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    acked += [line.split() for line in child.stdout.read().splitlines()]
    child.stdout.close()

    last_ckpt = max(int(a[1]) for a in acked if a[0] == "ckpt")
    cid = next(int(a[1]) for a in acked if a[0] == "conv")
    acked_ids = [int(a[1]) for a in acked if a[0] == "msg"]

    with ConversationStore(db) as store:
        assert store.recovered_on_open == 1
        msgs = store.messages(cid)
        assert [m.id for m in msgs[:-1]] == acked_ids
        assert [m.text for m in msgs[:2]] == ["question 0", "answer 0"]
        m = msgs[-1]
        assert m.id == reply and m.status == "cancelled"
        # The last acknowledged checkpoint, or one committed just before the kill.
        assert m.text in (f"once upon a time {last_ckpt}", f"once upon a time {last_ckpt + 1}")
        assert "cancelled" in store.export_markdown(cid)
    assert fts_consistent(db)


def test_export_markdown(store: ConversationStore) -> None:
    cid = store.create_conversation(model="smol")
    store.add_message(cid, "user", "Show me Python")
    store.add_message(
        cid,
        "assistant",
        "```python\nprint('hi')\n```",
        model="smol",
        metrics=ReplyMetrics(ttft_ms=120, completion_tokens=12, tokens_per_s=130.0, total_ms=500),
    )
    mid = store.begin_reply(cid, "smol")
    store.finish_reply(mid, "half an ans", "cancelled")
    mid = store.begin_reply(cid, "smol")
    store.finish_reply(mid, "Like this:\n~~~bash\nls -", "cancelled")
    mid = store.begin_reply(cid, "smol")
    store.finish_reply(mid, "", "error", error="model crashed")

    md = store.export_markdown(cid)
    lines = md.splitlines()
    assert lines[0] == "# Show me Python"
    assert "- **Project:** default" in lines and "- **Model:** smol" in lines
    assert "- **Messages:** 5" in lines
    assert "Like this:\n~~~bash\nls -\n~~~\n\n*smol*\n" in md  # the cut code block is closed
    assert any(line.startswith("### You · ") for line in lines)
    assert "```python\nprint('hi')\n```" in md
    assert "*TTFT 120 ms · 12 tokens · 130.0 tok/s · 0.50 s total · smol*" in lines
    cancelled = next(i for i, line in enumerate(lines) if line.endswith("· *cancelled*"))
    assert lines[cancelled].startswith("### TARS · ") and lines[cancelled + 2] == "half an ans"
    assert any(line.endswith("· *failed*") for line in lines)
    assert "> **Error:** model crashed" in lines
    with pytest.raises(LookupError):
        store.export_markdown(9999)


def test_full_text_search(store: ConversationStore) -> None:
    other = store.create_project("garden")
    a = store.create_conversation()
    b = store.create_conversation(project_id=other.id)
    store.add_message(a, "user", "My cat is called Ziggy and loves sardines.")
    store.add_message(b, "user", "Plant tomatoes after the last frost; cats dig in beds.")
    store.add_message(b, "assistant", "Frost dates vary by region.")

    hits = store.search_messages("ziggy")
    assert [(h.conversation_id, h.role) for h in hits] == [(a, "user")]
    assert "**Ziggy**" in hits[0].snippet
    assert hits[0].conversation_title.startswith("My cat")
    # Stemming: "cat" matches "cats"; project scoping; punctuation-only is no query.
    assert {h.conversation_id for h in store.search_messages("cat")} == {a, b}
    assert [h.conversation_id for h in store.search_messages("cat", project_id=other.id)] == [b]
    assert store.search_messages('"*) OR (') == []
    assert store.search_messages('frost "dates') != []
    assert store.search_messages("frost tomatoes ziggy") == []


def fts_consistent(db: Path) -> bool:
    """FTS5's own check that the index matches the messages table exactly."""
    with sqlite3.connect(db) as raw:
        try:
            raw.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
        except sqlite3.DatabaseError:
            return False
        indexed = raw.execute("SELECT count(*) FROM messages_fts_docsize").fetchone()[0]
        return bool(indexed == raw.execute("SELECT count(*) FROM messages").fetchone()[0])


def test_search_index_follows_replies_edits_and_deletes(store: ConversationStore, db: Path) -> None:
    keep = store.create_conversation()
    store.add_message(keep, "user", "chlorophyll is green")
    cid = store.create_conversation()
    mid = store.begin_reply(cid, "m")
    store.checkpoint_reply(mid, "photosynthesis draft")
    assert [h.message_id for h in store.search_messages("photosynthesis")] == [mid]
    store.finish_reply(mid, "chlorophyll absorbs light")
    assert store.search_messages("photosynthesis") == []
    assert len(store.search_messages("chlorophyll")) == 2
    assert fts_consistent(db)
    assert store.delete_conversation(cid)
    assert not store.delete_conversation(cid)
    assert store.messages(cid) == []
    assert [h.conversation_id for h in store.search_messages("chlorophyll")] == [keep]
    assert fts_consistent(db)  # the cascade removed the deleted messages from the index


def test_migration_from_version_1(db: Path) -> None:
    db.parent.mkdir(parents=True)
    raw = sqlite3.connect(db, isolation_level=None)
    assert migrations.migrate(raw, target=1) == (0, 1)
    now = time.time()
    raw.execute(
        "INSERT INTO conversations (project_id, title, created_at, updated_at) "
        "VALUES (1, 'old', ?, ?)",
        (now, now),
    )
    raw.execute(
        "INSERT INTO messages (conversation_id, role, text, created_at, status) "
        "VALUES (1, 'user', 'remember the aardvark', ?, 'complete')",
        (now,),
    )
    raw.execute(
        "INSERT INTO messages (conversation_id, role, text, created_at, status) "
        "VALUES (1, 'assistant', 'aardv', ?, 'streaming')",
        (now,),
    )
    raw.close()

    with ConversationStore(db) as store:
        assert store.schema_version() == migrations.latest_version()
        assert store.recovered_on_open == 1  # no owner recorded: an orphan
        assert [h.text for h in store.messages(1)] == ["remember the aardvark", "aardv"]
        hits = store.search_messages("aardvark")
        assert [h.message_id for h in hits] == [1]  # backfilled by the upgrade
        assert [h.message_id for h in store.search_messages("aardv")] == [2]
        store.finish_reply(2, "aardvarks eat ants")
        assert {h.message_id for h in store.search_messages("aardvark")} == {1, 2}
    assert fts_consistent(db)


def test_failed_migration_rolls_back(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ConversationStore(db).close()
    latest = migrations.latest_version()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, broken])
    with pytest.raises(RuntimeError, match="disk on fire"):
        ConversationStore(db)
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == latest
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
    assert "half_done" not in tables


def test_newer_schema_is_refused(db: Path) -> None:
    ConversationStore(db).close()
    with sqlite3.connect(db) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(SchemaError, match="newer"):
        ConversationStore(db)


def test_threads_share_one_store(store: ConversationStore) -> None:
    errors: list[BaseException] = []
    cid_reply = store.create_conversation()
    reply = store.begin_reply(cid_reply, "m")

    def writer(n: int) -> None:
        try:
            cid = store.create_conversation(title=f"t{n}")
            for i in range(20):
                store.add_message(cid, "user", f"thread {n} message {i}")
        except BaseException as exc:
            errors.append(exc)

    def streamer() -> None:
        try:
            for i in range(40):
                store.checkpoint_reply(reply, "x" * i)
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(40):
                store.list_conversations()
                store.search_messages("thread")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=streamer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    listed = {c.title: c.message_count for c in store.list_conversations()}
    assert all(listed[f"t{n}"] == 20 for n in range(4))
    assert store.get_message(reply).text == "x" * 39  # type: ignore[union-attr]
    stats = store.stats()
    assert stats.messages == 81 and stats.messages_by_status == {"complete": 80, "streaming": 1}
    assert len(store.search_messages("thread message", limit=100)) == 80
    assert fts_consistent(store.path)


def test_stats(store: ConversationStore) -> None:
    cid = store.create_conversation()
    store.add_message(cid, "user", "hi")
    for tps, ttft in ((100.0, 10.0), (200.0, 30.0)):
        mid = store.begin_reply(cid, "m")
        store.finish_reply(
            mid,
            "yo",
            metrics=ReplyMetrics(
                ttft_ms=ttft, prompt_tokens=5, completion_tokens=2, tokens_per_s=tps
            ),
        )
    s = store.stats()
    assert (s.projects, s.conversations, s.messages) == (1, 1, 3)
    assert s.messages_by_role == {"user": 1, "assistant": 2}
    assert (s.prompt_tokens, s.completion_tokens) == (10, 4)
    assert s.mean_tokens_per_s == pytest.approx(150.0) and s.mean_ttft_ms == pytest.approx(20.0)
    assert s.db_bytes > 0
