"""The assistant every front-end shares: the chat session (recall, generate, store),
the llama.cpp engine, speech, telemetry and the node link. No Textual, no HTTP."""
