"""TARS's own endpoints over httpx, and memory in the loop: a remembered fact is
recalled through the API, the exchange is stored where the TUI's /history finds it."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from memory.conversation_store import ConversationStore
from tars_assistant.llm import LLMEngine
from tars_core.config import load_config
from tars_tui.app import make_app
from tars_tui.screens.history import HistoryScreen
from tars_tui.widgets.transcript import AssistantMessage

from .conftest import Server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def http(server: Server) -> httpx.Client:
    with server.client() as c:
        yield c  # type: ignore[misc]


def test_health_summary_without_a_key_and_figures_with_one(server: Server) -> None:
    public = httpx.get(f"{server.url}/health").json()
    assert public == {
        "status": "ok",
        "service": "tars",
        "version": 1,
        "model_ready": True,
        "node": "local",
    }
    full = server.health()
    assert full["status"] == "ok"
    pc1, node = full["pc1"], full["node"]
    assert isinstance(pc1, dict) and {"cpu_percent", "ram_used_mb", "gpus"} <= set(pc1)
    assert isinstance(node, dict) and node["state"] == "local" and node["embedded"] is True
    assert full["queue"]["max_concurrent"] == 1  # type: ignore[index]
    assert full["model"]["name"] == "SmolLM2-135M-Instruct.Q4_1.gguf"  # type: ignore[index]


def test_remembered_fact_is_recalled_and_the_exchange_stored(
    server: Server, http: httpx.Client
) -> None:
    r = http.post("/memory", json={"text": "My sister Aurelia lives in Lisbon."})
    assert r.status_code == 201, r.text
    fact = r.json()
    assert fact["kind"] == "fact" and fact["project"] == "default"
    server.wait_outbox_empty()

    found = http.get("/memory/search", params={"q": "where does my sister live"}).json()
    assert fact["id"] in [h["id"] for h in found["data"]]

    r = http.post("/chat/query", json={"message": "Where does my sister live?"})
    assert r.status_code == 200, r.text
    reply = r.json()
    assert fact["id"] in reply["memory_ids"]
    assert reply["reply"] and not reply["cancelled"]
    assert {"retrieval_ms", "queue_ms", "ttft_ms", "tokens_per_s"} <= set(reply["stages"])

    conv = http.get(f"/conversations/{reply['conversation_id']}").json()
    roles = [(m["role"], m["status"]) for m in conv["messages"]]
    assert roles == [("user", "complete"), ("assistant", "complete")]
    assert conv["messages"][1]["id"] == reply["message_id"]
    assert "retrieval_ms" in conv["messages"][1]["metrics"]["stages"]
    listed = http.get("/conversations").json()["data"]
    assert reply["conversation_id"] in [c["id"] for c in listed]

    # The exchange became a memory too, found by the next search.
    server.wait_outbox_empty()
    found = http.get("/memory/search", params={"q": "Where does my sister live?"}).json()
    assert any(h["kind"] == "exchange" for h in found["data"])

    # Continuing the conversation keeps it one conversation.
    again = http.post(
        "/chat/query",
        json={"message": "And my brother?", "conversation_id": reply["conversation_id"]},
    ).json()
    assert again["conversation_id"] == reply["conversation_id"]

    # Forgetting hides it from recall at once.
    assert http.delete(f"/memory/{fact['id']}").json() == {"id": fact["id"], "forgotten": True}
    assert http.delete(f"/memory/{fact['id']}").status_code == 404
    found = http.get("/memory/search", params={"q": "sister Aurelia Lisbon"}).json()
    assert fact["id"] not in [h["id"] for h in found["data"]]


def test_memory_off_per_request(server: Server, http: httpx.Client) -> None:
    before = len(
        http.get("/memory/search", params={"q": "pineapple pizza", "k": 50}).json()["data"]
    )
    r = http.post("/chat/query", json={"message": "Is pineapple pizza good?", "memory": False})
    reply = r.json()
    assert reply["memory_ids"] == [] and "retrieval_ms" not in reply["stages"]
    server.wait_outbox_empty()
    after = http.get("/memory/search", params={"q": "pineapple pizza", "k": 50}).json()["data"]
    assert len(after) == before, "nothing was remembered"


def test_projects_and_unknown_ones(http: httpx.Client) -> None:
    projects = http.get("/projects").json()["data"]
    default = next(p for p in projects if p["name"] == "default")
    assert default["active"] and default["conversations"] >= 1 and default["memories"] >= 1
    for r in (
        http.post("/chat/query", json={"message": "hi", "project": "atlantis"}),
        http.get("/conversations", params={"project": "atlantis"}),
        http.get("/memory/search", params={"q": "x", "project": "atlantis"}),
    ):
        assert r.status_code == 404
        assert "unknown project 'atlantis'" in r.json()["error"]["message"]
    assert http.get("/conversations/999999").status_code == 404


async def test_stored_exchange_shows_in_the_tui_history(server: Server, http: httpx.Client) -> None:
    reply = http.post("/chat/query", json={"message": "Remember the word heliotrope."}).json()
    config = load_config(server.config_path, env={})
    config = dataclasses.replace(config, node=dataclasses.replace(config.node, endpoint="off"))
    store = ConversationStore(server.data_dir / "tars.db")
    assert store.get_message(reply["message_id"]).text == reply["reply"]  # type: ignore[union-attr]
    app = make_app(config, engine=LLMEngine(config.llm), store=store)

    async with app.run_test(size=(120, 40)) as pilot:
        assert app.chat is not None
        app.chat.run_command("/new")
        app.chat.run_command("/history")
        await pilot.pause(0.3)
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        titles = [c.title for c in screen.conversations]
        assert titles[0] == "Remember the word heliotrope."
        await pilot.press("enter")  # reopen it
        await pilot.pause(0.5)
        texts = [m.text for m in app.chat.query(AssistantMessage)]
        assert reply["reply"] in texts
