"""``GET /health``: the figures of the TUI's panels, for scripts and dashboards.

Without a key it says only whether the server is up and ready (load balancers,
`tars doctor`); with a valid key it adds PC1's and the node's machines (CPU, RAM,
GPUs), the latency of every stage (last, p50, p95), the queue and the model.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from node_daemon.sysinfo import SystemReading
from tars_api.runtime import Runtime

SERVICE = "tars"
VERSION = 1


def _status(rt: Runtime) -> str:
    if rt.engine.load_error is not None and not rt.engine.is_ready:
        return "error"
    if not rt.engine.is_ready or rt.node.state in ("starting", "restarting"):
        return "starting"
    if rt.node.enabled and rt.node.state not in ("local", "remote"):
        return "degraded"
    return "ok"


def _system(reading: SystemReading | None) -> dict[str, Any] | None:
    return None if reading is None else dataclasses.asdict(reading)


def health_report(rt: Runtime, detailed: bool) -> dict[str, Any]:
    status = _status(rt)
    out: dict[str, Any] = {
        "status": status,
        "service": SERVICE,
        "version": VERSION,
        "model_ready": rt.engine.is_ready,
        "node": rt.node.state,
    }
    if not detailed:
        return out
    err = rt.engine.load_error
    node = rt.node.status()
    pc1 = rt.sampler.latest or rt.sampler.sample_once()
    latency = {}
    for stage in rt.latency.stages():
        summary = rt.latency.summary(stage)
        if summary is not None:
            latency[stage] = {
                "last": round(summary.last, 3),
                "p50": round(summary.p50, 3),
                "p95": round(summary.p95, 3),
                "count": summary.count,
            }
    out.update(
        {
            "uptime_s": round(time.time() - rt.started_at, 1),
            "model": {
                "name": rt.engine.model_name,
                "path": str(rt.engine.model_path) if rt.engine.model_path else None,
                "ready": rt.engine.is_ready,
                "error": str(err) if err is not None and not rt.engine.is_ready else None,
                "load_s": rt.model_load_s,
                "pid": getattr(rt.engine, "child_pid", None),
            },
            "pc1": _system(pc1),
            "node": {
                "state": node.state,
                "endpoint": node.endpoint,
                "embedded": rt.node.embedded,
                "rtt_ms": node.rtt_ms,
                "items": node.items,
                "error": node.error,
                "system": _system(node.system),
            },
            "memory": {
                "enabled": rt.memory is not None,
                "outbox_pending": rt.memory.semantic.pending_count() if rt.memory else None,
            },
            "latency": latency,
            "queue": rt.queue.snapshot(),
        }
    )
    return out


__all__ = ["SERVICE", "health_report"]
