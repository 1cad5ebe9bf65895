"""`tars-node`: serve | keygen | status."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from node_daemon import keys
from tars_core.settings.server import ServerConfig

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tars-node",
        description="TARS node (PC2): embeddings, vector search and ingestion over ZeroMQ.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the daemon",
        description="Run the daemon. Flags override the [server] section of the config.",
    )
    serve.add_argument("--config", type=Path, help="config file (default: the user's)")
    serve.add_argument("--bind", help="endpoint, e.g. tcp://0.0.0.0:5555 (port * = any free)")
    serve.add_argument("--data-dir", type=Path, help="index, SQLite, logs and keys")
    serve.add_argument(
        "--curve",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CURVE encryption and client-key authentication",
    )
    serve.add_argument(
        "--log-stderr",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also log to stderr (errors always are)",
    )
    serve.add_argument("--endpoint-file", type=Path, help=argparse.SUPPRESS)
    serve.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)

    keygen = sub.add_parser(
        "keygen",
        help="create CURVE keys",
        description="Create the server's CURVE key pair (kept if it exists) and a client key "
        "pair, authorised at once. Secret files are 0600.",
    )
    keygen.add_argument("--config", type=Path, help="config file (default: the user's)")
    keygen.add_argument("--data-dir", type=Path, help="the node's data directory")
    keygen.add_argument("--client", default="client", help="client key name (default: client)")
    keygen.add_argument("--force", action="store_true", help="replace existing keys")

    status = sub.add_parser(
        "status",
        help="print a node's stats",
        description="Ask a node for its stats and print them.",
    )
    status.add_argument("endpoint", metavar="ENDPOINT", help="e.g. tcp://pc2.lan:5555")
    status.add_argument("--config", type=Path, help="config file; [node] keys are the default")
    status.add_argument("--server-key", help="the server's public key file (CURVE)")
    status.add_argument("--client-key", help="this machine's client.key_secret file (CURVE)")
    status.add_argument("--timeout", type=float, default=3.0, help="seconds per try")
    status.add_argument("--json", action="store_true", help="print the raw stats as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "keygen":
            return _keygen(args)
        return _status(args)
    except _Refused as exc:
        print(f"tars-node: {exc}", file=sys.stderr)
        return EXIT_CONFIG


class _Refused(Exception):
    pass


def _load(config: Path | None) -> Any:
    from tars_core.config import ConfigError, load_config

    try:
        return load_config(config)
    except ConfigError as exc:
        raise _Refused(str(exc)) from None


def _dirs(config: Any, data_dir: Path | None) -> tuple[Path, Path, Path]:
    cfg: ServerConfig = config.server
    if data_dir is None:
        data_dir = Path(cfg.data_dir).expanduser() if cfg.data_dir else config.data_dir / "node"
    keys_dir = Path(cfg.keys_dir).expanduser() if cfg.keys_dir else data_dir / "keys"
    auth_dir = (
        Path(cfg.authorized_keys_dir).expanduser()
        if cfg.authorized_keys_dir
        else data_dir / "authorized_keys"
    )
    return data_dir, keys_dir, auth_dir


def _serve(args: argparse.Namespace) -> int:
    # Idle OpenMP threads (torch, faiss) sleep instead of spinning: the node shares its
    # cores with llama.cpp and Whisper on PC1, and sits idle between requests anyway.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    config = _load(args.config)
    cfg: ServerConfig = config.server
    bind = args.bind or cfg.bind
    curve = cfg.curve if args.curve is None else args.curve
    data_dir, keys_dir, auth_dir = _dirs(config, args.data_dir)
    try:
        refusal = keys.bind_refusal(bind, curve=curve, allow_insecure=cfg.allow_insecure)
    except ValueError as exc:
        raise _Refused(f"[server] bind: {exc}") from None
    if refusal:
        raise _Refused(refusal)
    if curve:
        try:
            keys.load_server_secret(keys_dir)
        except (OSError, ValueError) as exc:
            raise _Refused(str(exc)) from None
    if cfg.chunk_overlap > cfg.chunk_chars // 2:
        raise _Refused(
            f"[server] chunk_overlap ({cfg.chunk_overlap}) must be at most half of "
            f"chunk_chars ({cfg.chunk_chars})"
        )
    from node_daemon.embedder import resolve_model

    try:
        resolve_model(cfg.embed_model)
    except (OSError, ImportError) as exc:
        raise _Refused(f"[server] embed_model: {exc}") from None

    from node_daemon.server import ServeOptions, serve

    return serve(
        ServeOptions(
            cfg=cfg,
            data_dir=data_dir,
            bind=bind,
            curve=curve,
            keys_dir=keys_dir,
            authorized_dir=auth_dir,
            endpoint_file=args.endpoint_file,
            parent_pid=args.parent_pid,
            log_stderr=args.log_stderr,
        )
    )


def _keygen(args: argparse.Namespace) -> int:
    config = _load(args.config)
    _, keys_dir, auth_dir = _dirs(config, args.data_dir)
    try:
        made = keys.generate(keys_dir, auth_dir, client=args.client, force=args.force)
    except (OSError, ValueError, RuntimeError) as exc:
        raise _Refused(str(exc)) from None
    port = config.server.bind.rsplit(":", 1)[-1]
    print(f"""CURVE keys in {keys_dir}:
  server  {made.server_public.name} (public)  {made.server_secret.name} (secret, stays here)
  {args.client:<7} {made.client_public.name} (public, authorised as {made.authorized})
          {made.client_secret.name} (secret, for PC1)

Copy these two files to PC1 (e.g. with scp) into ~/.config/tars/keys/, and keep
the secret one private (chmod 600):
  {made.server_public}
  {made.client_secret}

On PC1, in ~/.config/tars/config.toml:
  [node]
  endpoint = "tcp://<this machine's name or address>:{port}"
  server_public_key = "~/.config/tars/keys/{made.server_public.name}"
  client_secret_key = "~/.config/tars/keys/{made.client_secret.name}"

On this machine (PC2), in [server]:
  bind = "tcp://0.0.0.0:{port}"
  curve = true
Then restart tars-node (a running node re-reads authorised keys on SIGHUP) and
check from PC1 with:  tars-node status tcp://<this machine>:{port}""")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from node_daemon.client import BlockingNodeClient, NodeError, NodeUnavailable

    server_key, client_key = args.server_key, args.client_key
    if server_key is None and client_key is None:
        node = _load(args.config).node
        server_key, client_key = node.server_public_key or None, node.client_secret_key or None
    try:
        client = BlockingNodeClient(
            args.endpoint,
            server_public_key=server_key,
            client_secret_key_file=client_key,
            timeout_s=args.timeout,
            retries=2,
        )
    except (OSError, ValueError) as exc:
        raise _Refused(str(exc)) from None
    with client:
        try:
            stats = client.stats()
        except NodeUnavailable as exc:
            print(f"tars-node: {exc}", file=sys.stderr)
            if not client.curve:
                print(
                    "  (no CURVE keys given: a node with curve = true stays silent)",
                    file=sys.stderr,
                )
            return EXIT_FAILED
        except NodeError as exc:
            print(f"tars-node: the node answered with an error: {exc}", file=sys.stderr)
            return EXIT_FAILED
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
    else:
        print(format_stats(stats, args.endpoint, client.last_rtt_ms))
    return EXIT_OK


def format_stats(s: dict[str, Any], endpoint: str, rtt_ms: float | None) -> str:
    up = int(s.get("uptime_s", 0))
    lines = [
        f"node      {endpoint}  {'ready' if s.get('ready') else 'starting'}, up "
        f"{up // 3600}h{up % 3600 // 60:02d}m{up % 60:02d}s, pid {s.get('pid')}, "
        f"curve {'on' if s.get('curve') else 'off'}, round trip "
        + (f"{rtt_ms:.2f} ms" if rtt_ms is not None else "?"),
    ]
    if s.get("ready"):
        idx, emb = s.get("index", {}), s.get("embed", {})
        by_ns = ", ".join(f"{k} {v}" for k, v in sorted(s.get("items_by_namespace", {}).items()))
        lines += [
            f"model     {s.get('model')}, {s.get('dim')} dims, {emb.get('device')}",
            f"items     {s.get('items')}" + (f"  ({by_ns})" if by_ns else ""),
            f"index     {idx.get('description')}: {idx.get('vectors')} vectors, "
            f"{idx.get('tombstones')} tombstones, {idx.get('unsaved_changes')} unsaved changes",
            f"embedding {emb.get('texts_encoded')} texts in {emb.get('batches')} batches, "
            f"cache {emb.get('cache_hits')} hits / {emb.get('cache_misses')} misses",
        ]
    q = s.get("queue", {})
    lines.append(f"queue     {q.get('inflight')} in flight, {q.get('embed_pending')} texts waiting")
    sysinfo = s.get("system", {})
    gpus = sysinfo.get("gpus") or []
    gpu = (
        "; ".join(
            f"{g['name']} {g['util_percent']:.0f}% {g['mem_used_mb']:.0f}/"
            f"{g['mem_total_mb']:.0f} MB"
            for g in gpus
        )
        if gpus
        else (sysinfo.get("gpu_error") or "none")
    )
    lines.append(
        f"machine   cpu {sysinfo.get('cpu_percent', 0):.0f}%, ram "
        f"{sysinfo.get('ram_used_mb', 0) / 1024:.1f}/{sysinfo.get('ram_total_mb', 0) / 1024:.1f} "
        f"GB, node rss {sysinfo.get('rss_mb', 0):.0f} MB, gpu: {gpu}"
    )
    ops = s.get("ops", {})
    if ops:
        lines.append(
            "ops       "
            + "  ".join(
                f"{op} {o['count']}x p50 {o['p50_ms']:.1f} p99 {o['p99_ms']:.1f} ms"
                + (f" ({o['errors']} err)" if o["errors"] else "")
                for op, o in ops.items()
            )
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
