"""The memory layers PC1 uses: conversations (SQLite), projects, semantic memory."""
