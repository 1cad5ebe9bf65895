"""Property-based fuzzing of a real node (hypothesis; strategies in fuzzing.py).

For every frame: a reply whose code is in the closed set, or a connection dropped
by the size limit; never `internal`; the id back when it was readable; `health`
after every batch; the process never exits. A bounded, derandomised smoke run
(about 20 s with the node's start); bench/node_fuzz.py runs the same for longer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node_daemon.server import MAX_INFLIGHT
from tests.node import fuzzing
from tests.node.conftest import spawn
from tests.node.fuzzing import Case, Harness
from tests.node.wire import wait_ready

pytestmark = pytest.mark.slow

MAX_MESSAGE_BYTES = 64 * 1024  # the smallest the config allows: the size limit is cheap to hit


def smoke(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    root: Path = tmp_path_factory.mktemp("fuzz-node")
    config = root / "node.toml"
    config.write_text(f"[server]\nmax_message_bytes = {MAX_MESSAGE_BYTES}\n", encoding="utf-8")
    daemon = spawn(root / "data", home=root / "home", args=("--config", str(config)))
    try:
        wait_ready(daemon.endpoint, lambda: daemon.proc.poll() is None)
        h = Harness(
            daemon.endpoint, lambda: daemon.proc.poll() is None, MAX_MESSAGE_BYTES, strict=True
        )
        yield h
        h.close()
        assert h.tally.internal == 0 and h.tally.unanswered == 0, h.tally.failures
    finally:
        code = daemon.stop()
        assert code == 0, daemon.stderr()[-3000:]


too_big = st.integers(MAX_MESSAGE_BYTES + 1, 2 * MAX_MESSAGE_BYTES).map(
    lambda n: Case("over the size limit", [b"\x00" * n])
)
# one case in 20 over the size limit: each costs a wait and a reconnect
mostly_small = st.integers(0, 19).flatmap(lambda i: too_big if i == 0 else fuzzing.anything)


@smoke(60)
@given(batch=st.lists(mostly_small, min_size=1, max_size=8))
def test_dealer_frames_get_a_protocol_reply(harness: Harness, batch: list[Case]) -> None:
    for case in batch:
        harness.one(case)
    harness.after_batch()


@smoke(20)
@given(batch=st.lists(fuzzing.single, min_size=1, max_size=4))
def test_req_socket_frames_get_a_protocol_reply(harness: Harness, batch: list[Case]) -> None:
    for case in batch:
        harness.one(case, req=True)
    harness.after_batch()


@smoke(3)
@given(cases=st.lists(fuzzing.anything, min_size=1, max_size=8))
def test_a_flood_past_the_inflight_limit_answers_every_frame(
    harness: Harness, cases: list[Case]
) -> None:
    harness.flood(cases, n_health=3 * MAX_INFLIGHT)
    harness.after_batch()


def test_the_smoke_run_covered_what_it_claims(harness: Harness) -> None:
    """Last in the module: the cases above did reach every kind, `busy` and the size limit."""
    t = harness.tally
    kinds = {"mutated", "oversized", "vector", "raw", "truncated", "not a map", "multi-frame"}
    assert kinds <= set(t.kinds), t.kinds
    assert t.dropped_by_size and t.busy_in_floods, t
    assert {"ok", "bad_request", "too_large", "busy"} <= set(t.codes), t.codes
    assert t.health_after_batch == t.batches
