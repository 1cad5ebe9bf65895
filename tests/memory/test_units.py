"""The parts that need no node: schema upgrade, the outbox's order and durability,
context fitting, file reading."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from memory import migrations
from memory.context import Entry, approx_tokens, context_budget, fit_context, shorten
from memory.conversation_store import ConversationStore
from memory.documents import UnreadableFile, collect_files, file_text
from memory.memory_store import MemoryStore
from memory.outbox import _next_batch
from tars_core.settings.memory import TEXT_SUFFIXES

from .pdf import make_pdf


def test_a_version_2_database_is_upgraded_and_keeps_its_data(tmp_path: Path) -> None:
    db = tmp_path / "tars.db"
    with sqlite3.connect(db, isolation_level=None) as raw:
        migrations.migrate(raw, target=2)
        raw.execute("INSERT INTO conversations (project_id, title, created_at, updated_at)"
                    " VALUES (1, 'old talk', 1.0, 1.0)")  # fmt: skip
    with ConversationStore(db) as conv, MemoryStore(db) as store:
        assert conv.schema_version() == migrations.latest_version() == 4
        assert conv.list_conversations()[0].title == "old talk"
        assert len(store.instance) == 8 and store.pending_count() == 0
    with MemoryStore(db) as again:  # the instance id is the database's, for good
        assert again.instance == store.instance


def test_the_outbox_keeps_order_across_restarts_and_batches_by_op(tmp_path: Path) -> None:
    db = tmp_path / "tars.db"
    with MemoryStore(db) as store:
        a = store.add_memory(
            store.exchange_id(7), "exchange", "User: hi\nTARS: hello", project_id=1
        )
        assert a is not None
        assert store.add_memory(store.exchange_id(7), "exchange", "again", project_id=1) is None
        b = store.add_memory(store.new_fact_id(), "fact", "the sky is blue", project_id=None)
        assert b is not None
        assert store.forget([a.id, "nope"]) == [a.id]
        assert store.restore([a.id]) == [a.id]
    with MemoryStore(db) as store:
        head = store.outbox_head(10)
        assert [(e.op, e.item_id) for e in head] == [
            ("upsert", a.id),
            ("upsert", b.id),
            ("delete", a.id),
            ("upsert", a.id),
        ]
        assert head[0].payload is not None and head[0].payload["project"] == store.project_label(1)
        assert head[1].payload is not None and head[1].payload["project"].endswith("/global")
        # One op per batch, never the same id twice in one.
        assert [e.seq for e in _next_batch(head)] == [head[0].seq, head[1].seq]
        assert [e.op for e in _next_batch(head[2:])] == ["delete"]
        store.delivered(head[:2])
        assert store.pending_count() == 2
        assert store.get_memory(a.id).delivered_at is not None  # type: ignore[union-attr]
        store.delivery_failed(head[2:3], "bad_request: nope", final=True)
        assert store.pending_count() == 1 and store.failed_count() == 1
        assert store.retry_failed() == 1 and store.outbox_head(1)[0].seq == head[2].seq


def test_ids_and_labels_are_scoped_by_database(tmp_path: Path) -> None:
    with MemoryStore(tmp_path / "a.db") as one, MemoryStore(tmp_path / "b.db") as two:
        assert one.project_label(3) != two.project_label(3)
        assert one.memory_namespace != two.memory_namespace
        assert one.project_from_label(one.project_label(3)) == 3
        assert one.project_from_label(two.project_label(3)) is None
        fact = one.new_fact_id()
        assert one.full_id(one.short_id(fact)) == fact


def test_fit_context_keeps_the_best_first_and_never_exceeds_the_budget() -> None:
    rng = random.Random(3)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota"]
    entries = [
        Entry(
            f"m{i}", " ".join(rng.choice(words) for _ in range(rng.randint(3, 120))), "2024-01-01"
        )
        for i in range(30)
    ]
    for budget in (0, 5, 13, 40, 100, 333, 5000):
        fitted = fit_context(entries, budget, approx_tokens, summary=("proj", "words " * 300))
        assert fitted.tokens <= budget and approx_tokens(fitted.text) <= budget
        if fitted.used_ids:
            first = [e.id for e in entries if e.id in fitted.used_ids]
            assert fitted.used_ids == tuple(first)  # in rank order
        if budget >= 100:
            assert fitted.summary_used
            summary_line = fitted.text.splitlines()[1]
            assert approx_tokens(summary_line) <= budget // 2
    everything = fit_context(entries[:3], 5000, approx_tokens)
    assert everything.used_ids == ("m0", "m1", "m2") and everything.shortened == 0
    assert fit_context([], 100, approx_tokens).text == ""


def test_shorten_and_budget() -> None:
    text = "one two three four five six seven eight nine ten " * 5
    short = shorten(text, 10, approx_tokens)
    assert approx_tokens(short) <= 10 and short.endswith("…") and text.startswith(short[:-1])
    assert context_budget(512, 1024, 40) == 492
    assert context_budget(512, 4096, 512) == 512
    assert context_budget(512, 256, 512) == 64


def test_reading_files(tmp_path: Path) -> None:
    pdf = make_pdf(["Hello from a PDF"])
    assert "Hello from a PDF" in file_text(tmp_path / "a.pdf", pdf, TEXT_SUFFIXES)
    assert file_text(tmp_path / "Makefile", b"all:\n\techo hi\n", TEXT_SUFFIXES).startswith("all")
    cases = {
        "a.bin": (b"\x00\x01\x02binary", "a binary file, not text"),
        "a.txt": ("é".encode("latin-1") + b" x", "not UTF-8 text"),
        "a.dat": ("é".encode("latin-1") + b" x", "not a text file (.dat)"),
        "empty.md": (b"  \n", "no text in it"),
        "scan.pdf": (make_pdf([]), "a PDF without a text layer (scanned?)"),
    }
    for name, (data, reason) in cases.items():
        with pytest.raises(UnreadableFile) as err:
            file_text(tmp_path / name, data, TEXT_SUFFIXES)
        assert str(err.value) == reason, name
    with pytest.raises(UnreadableFile, match="not a readable PDF"):
        file_text(tmp_path / "x.pdf", b"%PDF-1.4 nonsense", TEXT_SUFFIXES)


def test_collect_files_skips_hidden_and_tool_folders(tmp_path: Path) -> None:
    for rel in ("a.md", "sub/b.py", ".hidden/c.md", "node_modules/d.js", "sub/.e.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x", encoding="utf-8")
    files, problems = collect_files(tmp_path)
    assert [f.relative_to(tmp_path.resolve()).as_posix() for f in files] == ["a.md", "sub/b.py"]
    assert problems == []
    missing, problems = collect_files(tmp_path / "nope")
    assert missing == [] and problems[0].reason == "no such file or folder"
