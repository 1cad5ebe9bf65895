"""A real llama.cpp server (xllamacpp's build of llama-server) on loopback, in a
process of its own so a test can kill it mid-reply.

    python llama_server.py MODEL.gguf PORT [API_KEY]

Prints ``ready http://127.0.0.1:PORT`` once it serves, then serves until killed.
"""

from __future__ import annotations

import sys
import time

import xllamacpp as xlc


def main() -> None:
    model, port = sys.argv[1], int(sys.argv[2])
    params = xlc.CommonParams()
    params.model.path = model
    params.n_ctx = 2048
    params.n_parallel = 1
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = 1
    params.endpoint_metrics = True
    params.endpoint_slots = True
    if len(sys.argv) > 3:
        params.api_keys = [sys.argv[3]]
    server = xlc.Server(params)
    print(f"ready {server.listening_address}", flush=True)
    while True:
        time.sleep(3600)
        del server  # never reached; keeps the server referenced until the process dies


if __name__ == "__main__":
    main()
