"""The memory slash commands, driven through the registry as plain mode drives them."""

from __future__ import annotations

import pytest

from memory.conversation_store import ConversationStore
from memory.service import Memory
from tars_assistant.session import ChatSession
from tars_tui import commands
from tars_tui.commands.memory import MemoryView, MessageHitsView, ProjectsView

from .conftest import Host

pytestmark = pytest.mark.slow


def ids_in(memory: Memory, text: str) -> set[str]:
    return {r.id for r in memory.store.list_memories(all_projects=True, include_hidden=True)
            if memory.store.short_id(r.id) in text}  # fmt: skip


async def test_memory_search_forget_restore_and_pin(memory: Memory, session: ChatSession) -> None:
    host = Host(session, memory)
    commands.dispatch(host, "/remember Our landlord Mr Okafor collects the rent on the 3rd.")
    planted = memory.store.list_memories(session.project_id)[0]
    assert memory.store.short_id(planted.id) in host.last()
    for text in (
        "The dentist appointment moved to Thursday afternoon.",
        "My favourite tea is smoky lapsang souchong.",
        "The car needs new winter tyres before November.",
    ):
        commands.dispatch(host, f"/remember {text}")
    commands.dispatch(host, "/remember --global I prefer answers in metric units.")
    assert (await memory.semantic.flush()).pending == 0

    # A paraphrase sharing no content word with the memory.
    commands.dispatch(host, "/memory search when is the monthly housing payment due")
    await host.settle()
    found = host.last()
    assert found.splitlines()[2].startswith("1. `" + memory.store.short_id(planted.id))
    for mode in ("--dense", "--keyword", "--hybrid"):
        commands.dispatch(host, f"/memory search {mode} landlord rent")
        await host.settle()
        assert memory.store.short_id(planted.id) in host.last()

    commands.dispatch(host, f"/memory show {memory.store.short_id(planted.id)}")
    assert "Okafor" in host.last() and "**Project:** default" in host.last()

    # Forget: gone from retrieval at once, and from the node once delivered.
    question = "Who do I pay the rent to?"
    before = await memory.semantic.recall(question, session.project_id)
    assert planted.id in before.used_ids
    commands.dispatch(host, f"/memory forget {memory.store.short_id(planted.id)}")
    assert "Forgot 1" in host.last()
    after = await memory.semantic.recall(question, session.project_id)
    assert planted.id not in {m.id for m in after.memories}
    assert (await memory.semantic.flush()).pending == 0
    assert (await memory.semantic.node().get([planted.id]))["missing"] == [planted.id]  # type: ignore[union-attr]
    commands.dispatch(host, f"/memory restore {memory.store.short_id(planted.id)}")
    assert (await memory.semantic.flush()).pending == 0
    restored = await memory.semantic.recall(question, session.project_id)
    assert planted.id in restored.used_ids

    # Pin: in the context of every reply of its scope, even an unrelated one.
    tea = next(r for r in memory.store.list_memories(session.project_id) if "lapsang" in r.text)
    unrelated = "How many moons does Jupiter have?"
    assert tea.id not in (await memory.semantic.recall(unrelated, session.project_id)).used_ids
    commands.dispatch(host, f"/memory pin {memory.store.short_id(tea.id)}")
    pinned = await memory.semantic.recall(unrelated, session.project_id)
    assert tea.id in pinned.used_ids and "[pinned]" in pinned.context_text
    commands.dispatch(host, f"/memory unpin {memory.store.short_id(tea.id)}")
    assert tea.id not in (await memory.semantic.recall(unrelated, session.project_id)).used_ids

    commands.dispatch(host, "/memory")
    assert "Memories" in host.last() and "metric units" in host.last()
    commands.dispatch(host, "/memory outbox")
    assert "0 waiting" in host.said[-1][1]
    commands.dispatch(host, "/memory forget nosuchid")
    assert host.said[-1][0] == "error" and "no memory" in host.said[-1][1]


async def test_projects_commands_create_switch_rename_archive(
    memory: Memory, session: ChatSession, conversations: ConversationStore
) -> None:
    host = Host(session, memory)
    commands.dispatch(host, '/projects new "home reno" Kitchen and bathroom work')
    reno = conversations.project_by_name("home reno")
    assert reno is not None and reno.description == "Kitchen and bathroom work"
    commands.dispatch(host, '/projects new "Home Reno"')
    assert host.said[-1][0] == "error" and "exists already" in host.said[-1][1]

    commands.dispatch(host, "/project home reno")
    assert session.project_id == reno.id and host.reloads == 1
    conv = conversations.create_conversation(reno.id)
    conversations.add_message(conv, "user", "We chose oak for the floor.")
    commands.dispatch(host, "/projects")
    listing = host.last()
    assert "▶ **home reno**" in listing and "1 conversations" in listing

    commands.dispatch(host, "/projects rename renovation")
    assert memory.projects.get(reno.id).name == "renovation"
    commands.dispatch(host, '/projects rename "renovation" "house"')
    assert memory.projects.get(reno.id).name == "house"
    commands.dispatch(host, "/projects rename default other")
    assert host.said[-1][0] == "error"

    # Archiving the active project falls back to the default one.
    commands.dispatch(host, "/projects archive")
    assert memory.projects.get(reno.id).archived
    assert session.project_id == conversations.default_project().id
    commands.dispatch(host, "/projects")
    assert "house" not in host.last()
    commands.dispatch(host, "/projects archived")
    assert "house** · archived" in host.last()
    commands.dispatch(host, "/project house")
    assert host.said[-1][0] == "error" and "archived" in host.said[-1][1]
    commands.dispatch(host, "/projects unarchive house")
    commands.dispatch(host, "/project house")
    assert session.project_id == reno.id
    commands.dispatch(host, "/project nowhere")
    assert host.said[-1][0] == "error" and "no project named" in host.said[-1][1]

    screens = Host(session, memory, screens=True)
    commands.dispatch(screens, "/projects")
    commands.dispatch(screens, "/memory all")
    assert screens.views == [ProjectsView(), MemoryView(reno.id, all_projects=True)]


async def test_history_finds_messages_by_words_and_by_meaning(
    memory: Memory, session: ChatSession, conversations: ConversationStore
) -> None:
    host = Host(session, memory)
    first = conversations.create_conversation(title="bikes")
    asked = conversations.add_message(first, "user", "My bicycle chain keeps slipping off.")
    reply = conversations.add_message(first, "assistant", "Check the derailleur alignment.")
    memory.semantic.remember_exchange(
        "My bicycle chain keeps slipping off.",
        "Check the derailleur alignment.",
        project_id=1,
        conversation_id=first,
        message_id=reply,
    )
    other = conversations.create_conversation(title="soup")
    conversations.add_message(other, "user", "How long should lentil soup simmer?")
    assert (await memory.semantic.flush()).pending == 0

    commands.dispatch(host, "/history derailleur")  # keyword, local FTS5
    await host.settle()
    assert f"`@{reply}`" in host.last()
    commands.dispatch(host, "/history problem with my bike drivetrain")  # meaning, the node
    await host.settle()
    assert f"`@{asked}`" in host.last() and "meaning" in host.last()
    commands.dispatch(host, f"/history @{reply}")
    assert session.conversation is not None and session.conversation.id == first
    assert host.focused == reply  # the front end brings that message into view
    assert "derailleur" in host.last()

    # The old behaviour stays: no argument lists, a number reopens.
    commands.dispatch(host, "/history")
    assert host.chosen is not None and [c.id for c in host.chosen][:2] == [other, first]
    commands.dispatch(host, "/history 1")
    assert session.conversation.id == other  # type: ignore[union-attr]

    screens = Host(session, memory, screens=True)
    commands.dispatch(screens, "/history chain slipping")
    await screens.settle()
    view = screens.views[-1]
    assert isinstance(view, MessageHitsView)
    assert (view.hits[0].message_id, view.hits[0].found_by) == (asked, "both")


def test_memory_commands_explain_when_memory_is_off(session: ChatSession) -> None:
    host = Host(session, None)
    for line in ("/remember x", "/memory", "/projects", "/search x", "/ingest .", "/history x"):
        commands.dispatch(host, line)
        assert host.said[-1][0] == "error" and "memory is off" in host.said[-1][1], line
    commands.dispatch(host, "/history")  # the plain list still works
    assert host.last() == "No conversations yet."
