"""`tars serve`: the assistant over an OpenAI-compatible HTTP API and a WebSocket."""
