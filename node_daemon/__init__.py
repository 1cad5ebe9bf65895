"""TARS node daemon (PC2): embeddings, vector search and ingestion over ZeroMQ."""
