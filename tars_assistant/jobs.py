"""`tars jobs run`: the maintenance jobs of :mod:`memory.jobs`, wired to the model
and the node. For ``endpoint = "auto"`` that is the embedded node a running `tars`
publishes (:mod:`node_daemon.published`), or one started for the run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from memory.jobs import JOB_NAMES, run_jobs
from memory.project_store import Summarizer
from tars_core.config import Config


def jobs_main(
    config: Config,
    *,
    only: Sequence[str] = JOB_NAMES,
    out: Callable[[str], None] = print,
) -> int:
    """`tars jobs run`: reach the node (start the embedded one for ``auto``), run the
    jobs, print one line each. Exit status 0 when every job succeeded, else 1."""
    from memory.conversation_store import ConversationStore
    from memory.project_store import llm_summarizer
    from memory.service import Memory
    from node_daemon.local import NodeStartError
    from tars_assistant.llm import LLMEngine
    from tars_assistant.node_link import NodeLink

    link = NodeLink(config)
    node_error = ""
    if link.enabled:
        try:
            link.start()
        except (NodeStartError, OSError, ValueError) as exc:
            node_error = str(exc)
            if "another tars-node" in node_error:  # one that publishes no endpoint
                node_error += " (a tars-node started by hand? set [node] endpoint to its address)"
    else:
        node_error = "[node] endpoint is off"
    engines: list[LLMEngine] = []

    def make_summarizer() -> Summarizer:
        engine = LLMEngine(config.llm)
        engine.load()
        engines.append(engine)
        return llm_summarizer(engine, config.memory.summary_tokens)

    conversations = ConversationStore(config.data_dir / "tars.db")
    memory = Memory.open(config.memory, conversations, lambda: link.client)
    if node_error:
        out(f"node: unavailable: {node_error}")
    elif link.shared_by is not None:
        out(f"node: the embedded node of tars (pid {link.shared_by}) at {link.endpoint}")
    try:
        reports = asyncio.run(
            run_jobs(
                memory,
                make_summarizer=make_summarizer,
                only=only,
                on_report=lambda r: out(r.line()),
            )
        )
    finally:
        memory.close()
        conversations.close()
        for engine in engines:
            engine.close()
        link.stop()
    return 0 if all(r.ok for r in reports) else 1


__all__ = ["jobs_main"]
