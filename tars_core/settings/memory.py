"""The `[memory]` config section (long-term memory on PC1). Standard library only."""

from __future__ import annotations

from dataclasses import dataclass

from tars_core.schema import setting

TEXT_SUFFIXES = (
    ".txt", ".md", ".markdown", ".rst", ".org", ".tex", ".csv", ".tsv", ".log",
    ".py", ".pyi", ".ipynb", ".js", ".mjs", ".ts", ".tsx", ".jsx", ".go", ".rs", ".c", ".h",
    ".cc", ".cpp", ".hpp", ".java", ".kt", ".swift", ".rb", ".php", ".pl", ".lua", ".r",
    ".scala", ".cs", ".sh", ".bash", ".zsh", ".fish", ".ps1", ".sql", ".html", ".htm", ".css",
    ".scss", ".xml", ".json", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".env",
    ".dockerfile", ".mk", ".cmake", ".gradle", ".vue", ".svelte", ".dart", ".ex", ".exs",
    ".erl", ".hs", ".ml", ".clj", ".jl", ".nim", ".zig", ".proto", ".graphql",
)  # fmt: skip


@dataclass(frozen=True)
class MemoryConfig:
    enabled: bool = setting(True, "Remember exchanges and recall them before each reply.")
    context_tokens: int = setting(
        512,
        "Most tokens of recalled context (project summary, pins, memories) put in front of "
        "the model; also capped at half of what [llm] n_ctx leaves for the prompt.",
        min=0,
        max=32768,
    )
    recall_k: int = setting(6, "Memories retrieved per reply.", min=0, max=100)
    recall_mode: str = setting(
        "hybrid",
        "How memories are retrieved: dense (meaning), keyword (BM25) or hybrid (both, fused).",
        choices=("dense", "keyword", "hybrid"),
    )
    recall_documents: bool = setting(
        True, "Also recall passages of the active project's ingested documents."
    )
    min_similarity: float = setting(
        0.25,
        "Recalled items less similar to the message than this (cosine) stay out of the context.",
        min=-1.0,
        max=1.0,
    )
    keyword_weight: float = setting(
        0.2,
        "Hybrid retrieval: weight of the keyword ranking against the dense one (1.0) in the "
        "reciprocal-rank fusion.",
        min=0.0,
        max=10.0,
    )
    rrf_k: int = setting(
        20,
        "Hybrid retrieval: the reciprocal-rank fusion constant (smaller: top ranks count more).",
        min=1,
        max=1000,
    )
    recall_timeout_s: float = setting(
        1.5,
        "Longest wait for the node before a reply goes ahead without memories.",
        min=0.05,
        max=60.0,
    )
    summary_in_context: bool = setting(
        True, "Give the model the active project's summary with the recalled memories."
    )
    remember_exchanges: bool = setting(
        True, "Send each completed exchange to the node as a memory of the active project."
    )
    remember_scope: str = setting(
        "project",
        "Default scope of /remember: the active project, or global (facts about you).",
        choices=("project", "global"),
    )
    outbox_batch: int = setting(
        64, "Most outbox entries sent to the node in one request.", min=1, max=1000
    )
    retry_max_s: float = setting(
        30.0, "Longest wait between delivery tries while the node is down.", min=0.5, max=3600.0
    )
    merge_threshold: float = setting(
        0.93,
        "`tars jobs run`: memories of one scope at or above this cosine are merged "
        "(the newest is kept).",
        min=0.5,
        max=1.0,
    )
    summary_tokens: int = setting(
        160, "Longest project summary the local model writes, in tokens.", min=16, max=2048
    )
    ingest_max_mb: float = setting(
        20.0, "/ingest: larger files are skipped and reported.", min=0.01, max=4096.0
    )
    ingest_suffixes: tuple[str, ...] = setting(
        TEXT_SUFFIXES,
        "/ingest: file endings read as text (PDF is always read, through pypdf); other "
        "files are read only when they hold UTF-8 text.",
    )
