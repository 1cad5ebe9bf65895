"""Node fuzz run: the strategies of tests/node/fuzzing.py for longer, random seed.

Prints ONE JSON object: frames sent, replies, frames dropped by the size limit,
crashes (the node process exiting; goal 0: it is restarted and the run goes on),
`internal` replies (goal 0), batches and how many were followed by a `health`
reply (goal: all), `busy` replies in floods, replies per code and cases per kind,
and the first failures seen. Each batch is 1-8 cases over a DEALER, or 1-4 over a
REQ socket; every ``--flood-every`` batches a flood of 3 x 512 frames goes out
before any reply is read. ``python bench/node_fuzz.py --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from node_daemon.server import MAX_INFLIGHT  # noqa: E402
from tests.node import fuzzing  # noqa: E402
from tests.node.conftest import Daemon, spawn  # noqa: E402
from tests.node.fuzzing import Case, Harness, Tally  # noqa: E402
from tests.node.wire import wait_ready  # noqa: E402


def log(msg: str) -> None:
    print(f"[node_fuzz] {msg}", file=sys.stderr, flush=True)


class Run:
    def __init__(self, root: Path, max_message_bytes: int) -> None:
        self.root = root
        self.max_message_bytes = max_message_bytes
        self.config = root / "node.toml"
        self.config.write_text(
            f"[server]\nmax_message_bytes = {max_message_bytes}\n", encoding="utf-8"
        )
        self.tally = Tally()
        self.crashes = 0
        self.exit_codes: list[int] = []
        self.daemon = self._start()
        self.harness = self._harness()

    def _start(self) -> Daemon:
        daemon = spawn(
            self.root / "data", home=self.root / "home", args=("--config", str(self.config))
        )
        wait_ready(daemon.endpoint, lambda: daemon.proc.poll() is None)
        return daemon

    def _harness(self) -> Harness:
        d = self.daemon
        return Harness(
            d.endpoint,
            lambda: d.proc.poll() is None,
            self.max_message_bytes,
            strict=False,
            tally=self.tally,
        )

    def check_alive(self) -> None:
        """A node that exited is a crash: count it, keep its stderr, start another."""
        code = self.daemon.proc.poll()
        if code is None:
            return
        self.crashes += 1
        self.exit_codes.append(code)
        self.tally.fail(f"node exited with {code}: {self.daemon.stderr()[-300:]}")
        self.harness.close()
        self.daemon = self._start()
        self.harness = self._harness()

    def close(self) -> int:
        self.harness.close()
        return self.daemon.stop()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--batches", type=int, default=400, help="hypothesis examples (batches)")
    ap.add_argument("--flood-every", type=int, default=50, help="a flood every N batches")
    ap.add_argument("--req-share", type=float, default=0.25, help="share of batches over REQ")
    ap.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    ap.add_argument("--max-message-bytes", type=int, default=64 * 1024)
    opts = ap.parse_args()
    run_seed = opts.seed if opts.seed is not None else random.SystemRandom().randrange(2**32)
    root = Path(tempfile.mkdtemp(prefix="tars-node-fuzz-"))
    log(f"seed {run_seed}, data in {root}")
    run = Run(root, opts.max_message_bytes)
    limit = opts.max_message_bytes
    too_big = st.integers(limit + 1, 2 * limit).map(
        lambda n: Case("over the size limit", [b"\0" * n])
    )
    case = st.integers(0, 19).flatmap(lambda i: too_big if i == 0 else fuzzing.anything)
    counter = {"n": 0}

    @seed(run_seed)
    @settings(
        max_examples=opts.batches,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # counting, not shrinking: every batch runs as drawn
        suppress_health_check=list(HealthCheck),
    )
    @given(
        batch=st.lists(case, min_size=1, max_size=8),
        small=st.lists(fuzzing.single, min_size=1, max_size=4),
        dice=st.floats(0, 1),
    )
    def one_batch(batch: list[Case], small: list[Case], dice: float) -> None:
        counter["n"] += 1
        h = run.harness
        if counter["n"] % opts.flood_every == 0:
            # a frame over the size limit would take the flood's connection with it
            h.flood([c for c in batch if c.size <= limit], n_health=3 * MAX_INFLIGHT)
        elif dice < opts.req_share:
            for c in small:
                h.one(c, req=True)
        else:
            for c in batch:
                h.one(c)
        h.after_batch()
        run.check_alive()
        if counter["n"] % 100 == 0:
            log(f"{counter['n']} batches, {run.tally.frames} frames, {run.tally.internal} internal")

    t0 = time.perf_counter()
    try:
        one_batch()
    finally:
        exit_code = run.close()
        shutil.rmtree(root, ignore_errors=True)
    seconds = time.perf_counter() - t0
    t = run.tally
    out: dict[str, Any] = {
        "bench": "node_fuzz",
        "seed": run_seed,
        "frames_sent": t.frames,
        "replies": t.replies,
        "dropped_by_size_limit": t.dropped_by_size,
        "unanswered": t.unanswered,
        "crashes": run.crashes,
        "internal_errors": t.internal,
        "wrong_ids": t.wrong_id,
        "replies_outside_protocol": t.bad_shape,
        "batches": t.batches,
        "health_answered_after_batch": t.health_after_batch,
        "busy_in_floods": t.busy_in_floods,
        "node_exit_code_at_stop": exit_code,
        "seconds": round(seconds, 1),
        "frames_per_s": round(t.frames / seconds, 1) if seconds else None,
        "goals": {
            "crashes": 0,
            "internal_errors": 0,
            "unanswered": 0,
            "health_answered_after_batch": t.batches,
        },
        "met": run.crashes == 0
        and t.internal == 0
        and t.unanswered == 0
        and t.wrong_id == 0
        and t.health_after_batch == t.batches,
        "codes": dict(t.codes.most_common()),
        "cases_by_kind": dict(t.kinds.most_common()),
        "max_message_bytes": opts.max_message_bytes,
        "failures": t.failures,
    }
    print(json.dumps(out))
    return 0 if out["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
