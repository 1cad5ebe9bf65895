"""The daemon's `[server]` config section (PC2). Standard library only."""

from __future__ import annotations

from dataclasses import dataclass

from tars_core.schema import setting


@dataclass(frozen=True)
class ServerConfig:
    bind: str = setting(
        "tcp://127.0.0.1:5555",
        "Where `tars-node serve` listens. Anything but loopback needs curve = true.",
    )
    data_dir: str = setting(
        "", "Index, SQLite, logs and keys; empty = the user's data directory + /node."
    )
    embed_model: str = setting(
        "", "A sentence-transformers model directory; empty = the bundled all-MiniLM-L6-v2."
    )
    threads: int = setting(
        0, "CPU threads for the embedding model; 0 = torch's default (all cores).", min=0, max=512
    )
    index_type: str = setting(
        "flat",
        "FAISS index: flat (exact), hnsw or ivf (approximate, for large collections).",
        choices=("flat", "hnsw", "ivf"),
    )
    hnsw_m: int = setting(32, "HNSW: links per vector.", min=4, max=128)
    hnsw_ef_search: int = setting(
        64, "HNSW: candidates explored per search (recall vs speed).", min=8, max=4096
    )
    ivf_nlist: int = setting(
        0, "IVF: number of clusters; 0 = about 2 x sqrt(items).", min=0, max=1_000_000
    )
    ivf_nprobe: int = setting(
        128,
        "IVF: clusters scanned per search (recall vs speed; 128 of ~2000 lists gave "
        "recall@10 0.95 at 1M items in bench/node_rpc.py).",
        min=1,
        max=65536,
    )
    curve: bool = setting(False, "Encrypt with CURVE and only answer authorised client keys.")
    allow_insecure: bool = setting(
        False, "Allow a non-loopback bind without CURVE. Only on a network you trust."
    )
    keys_dir: str = setting(
        "", "The server's CURVE key pair (from `tars-node keygen`); empty = data_dir/keys."
    )
    authorized_keys_dir: str = setting(
        "", "Public keys of the clients allowed in; empty = data_dir/authorized_keys."
    )
    max_message_bytes: int = setting(
        4 * 1024 * 1024,
        "Largest request accepted; bigger frames drop the connection.",
        min=64 * 1024,
        max=256 * 1024 * 1024,
    )
    dedup_threshold: float = setting(
        0.95,
        "Cosine at or above which an upsert is a near-duplicate: reported, not stored twice.",
        min=0.5,
        max=1.0,
    )
    chunk_chars: int = setting(800, "Ingest: characters per chunk.", min=100, max=20000)
    chunk_overlap: int = setting(
        150, "Ingest: characters shared by neighbouring chunks.", min=0, max=5000
    )
    batch_max: int = setting(64, "Most texts encoded in one model call.", min=1, max=4096)
    batch_wait_ms: float = setting(
        0.0,
        "Extra wait for more requests to join a batch; 0 = batch whatever queued meanwhile.",
        min=0.0,
        max=1000.0,
    )
    embed_cache_items: int = setting(
        20000, "Embeddings kept in memory, keyed by content hash.", min=0, max=10_000_000
    )
    max_queue: int = setting(
        20000,
        "Texts waiting to be embedded before new requests get `busy`.",
        min=1,
        max=10_000_000,
    )
    save_interval_s: float = setting(
        60.0,
        "Save the FAISS index this often while it changes (SQLite is the source of truth).",
        min=1.0,
        max=86400.0,
    )
    log_level: str = setting("info", "Log level.", choices=("debug", "info", "warning", "error"))
