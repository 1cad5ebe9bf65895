"""The API's parts on their own (no server): the fair queue, the rate limiter, the keys
file, the Host rule and the `[api]` config section."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from tars_api.keys import KeyFileError, KeyStore, hash_key
from tars_api.limits import GenerationQueue, QueueFull, RateLimiter
from tars_api.security import allowed_hosts, bind_problem, host_of
from tars_core.config import ConfigError, load_config


async def test_queue_serves_first_come_first_served_and_refuses_when_full() -> None:
    queue = GenerationQueue(max_concurrent=1, max_waiting=3)
    order: list[int] = []

    async def reply(i: int) -> None:
        ticket = queue.admit()
        assert ticket.position == i
        await ticket.wait()
        order.append(i)
        await asyncio.sleep(0.01)
        ticket.release()

    tasks = [asyncio.create_task(reply(i)) for i in range(4)]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull) as full:
        queue.admit()
    assert full.value.retry_after_s >= 1 and full.value.waiting == 3
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]
    assert queue.active == 0 and queue.waiting == 0 and queue.served == 4


async def test_a_waiter_that_goes_away_leaves_the_line() -> None:
    queue = GenerationQueue(max_concurrent=1, max_waiting=5)
    first = queue.admit()
    assert first.granted
    second = queue.admit()
    waiting = asyncio.create_task(second.wait())
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert queue.waiting == 0
    third = queue.admit()
    first.release()
    await asyncio.wait_for(third.wait(), 1)
    assert third.granted and queue.active == 1
    third.release()
    third.release()  # idempotent
    assert queue.active == 0


def test_rate_limiter_allows_the_burst_then_the_rate() -> None:
    limiter = RateLimiter(per_minute=60, burst=3)
    assert [limiter.check("a") for _ in range(3)] == [None, None, None]
    wait = limiter.check("a")
    assert wait is not None and 0 < wait <= 1.0
    assert limiter.check("b") is None  # per key
    assert RateLimiter(per_minute=0, burst=1).check("a") is None  # off


def test_keys_are_stored_as_hashes_and_can_be_revoked(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    key = store.new("laptop")
    assert key.startswith("tars-") and len(key) > 40
    assert key not in (tmp_path / "keys.json").read_text()
    assert hash_key(key) in (tmp_path / "keys.json").read_text()
    entry = store.verify(key)
    assert entry is not None and entry.name == "laptop"
    assert store.verify(key + "x") is None
    other = KeyStore(tmp_path / "keys.json")  # another process's view
    other.revoke("laptop")
    assert store.verify(key) is None
    with pytest.raises(KeyFileError, match="invalid key name"):
        store.new("has space")
    with pytest.raises(KeyFileError, match="no key named"):
        store.revoke("laptop")
    (tmp_path / "keys.json").write_text("{not json")
    with pytest.raises(KeyFileError, match="cannot read"):
        store.verify(key)


def test_host_rule() -> None:
    assert host_of("localhost:8277") == "localhost"
    assert host_of("[::1]:8277") == "::1"
    assert host_of("Example.COM.") == "example.com"
    base = load_config(env={})
    hosts = allowed_hosts(base)
    assert hosts is not None and {"localhost", "127.0.0.1", "::1"} <= hosts
    assert "evil.example" not in hosts
    wide = dataclasses.replace(base, api=dataclasses.replace(base.api, bind="0.0.0.0"))
    assert bind_problem(wide, key_count=0) is not None
    assert bind_problem(wide, key_count=1) is None
    assert bind_problem(base, key_count=0) is None
    anything = dataclasses.replace(base, api=dataclasses.replace(base.api, allowed_hosts=("*",)))
    assert allowed_hosts(anything) is None


def test_api_config_is_validated(tmp_path: Path) -> None:
    cfg = load_config(env={})
    assert cfg.api.bind == "127.0.0.1" and cfg.api.cors_origins == ()
    for bad, key in (
        ("[api]\nport = 70000\n", "[api] port"),
        ("[api]\nqueue_length = -1\n", "[api] queue_length"),
        ('[api]\nbind = "not a host"\n', "[api] bind"),
        ("[api]\ncors_origins = 5\n", "[api] cors_origins"),
        ('[api]\nlog_level = "loud"\n', "[api] log_level"),
    ):
        path = tmp_path / "c.toml"
        path.write_text(bad, encoding="utf-8")
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            load_config(path, env={})
    assert load_config(env={"TARS_API__PORT": "9000"}).api.port == 9000
