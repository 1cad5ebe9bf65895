"""Bad input gets a clear 4xx in OpenAI's error shape, and the server keeps serving:
malformed JSON, wrong types, huge messages and bodies, unknown projects and models."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import Server

pytestmark = pytest.mark.slow
USER = [{"role": "user", "content": "Hi"}]
CHAT = "/v1/chat/completions"


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    err: dict[str, Any] = body["error"]
    return err


CASES: list[tuple[str, str, dict[str, Any] | bytes, int, str | None, str]] = [
    ("malformed json", CHAT, b'{"messages": [', 400, None, "not valid JSON"),
    ("not an object", CHAT, b"[1, 2]", 400, None, "must be a JSON object"),
    ("no messages", CHAT, {"model": "tars"}, 400, "messages", "Field required"),
    ("messages not a list", CHAT, {"messages": "Hi"}, 400, "messages", "valid list"),
    ("empty messages", CHAT, {"messages": []}, 400, "messages", "at least 1"),
    ("bad role", CHAT, {"messages": [{"role": "wizard", "content": "x"}]}, 400,
     "messages[0].role", "Input should be"),
    ("content a number", CHAT, {"messages": [{"role": "user", "content": 7}]}, 400,
     "messages[0].content", "valid string"),
    ("temperature a string", CHAT, {"messages": USER, "temperature": "0.5"}, 400,
     "temperature", "valid number"),
    ("temperature too high", CHAT, {"messages": USER, "temperature": 9}, 400,
     "temperature", "less than or equal to 2"),
    ("max_tokens a float", CHAT, {"messages": USER, "max_tokens": 2.5}, 400,
     "max_tokens", "valid integer"),
    ("stream a string", CHAT, {"messages": USER, "stream": "yes"}, 400, "stream", "valid boolean"),
    ("five stops", CHAT, {"messages": USER, "stop": list("abcde")}, 400, "stop", "at most 4"),
    ("n of 2", CHAT, {"messages": USER, "n": 2}, 400, "n", "less than or equal to 1"),
    ("tool role", CHAT, {"messages": [{"role": "tool", "content": "x"}, *USER]}, 400,
     "messages[0].role", "not supported"),
    ("ends with the assistant", CHAT, {"messages": [{"role": "assistant", "content": "x"}]},
     400, "messages", "last message must be the user's"),
    ("typo in tars options", CHAT, {"messages": USER, "tars": {"memroy": False}}, 400,
     "tars.memroy", "Extra inputs"),
    ("huge message", CHAT, {"messages": [{"role": "user", "content": "x" * 5000}]}, 400,
     "messages[0].content", "at most 4000"),
    ("unknown project", CHAT, {"messages": USER, "tars": {"project": "narnia"}}, 404,
     None, "unknown project 'narnia'"),
    ("unknown model", CHAT, {"messages": USER, "model": "llama-9000"}, 404, "model",
     "is not loaded"),
    ("unknown conversation", CHAT, {"messages": USER, "tars": {"conversation_id": 10**9}},
     404, "tars.conversation_id", "no conversation"),
    ("embeddings of nothing", "/v1/embeddings", {"input": []}, 400, "input", "at least one"),
    ("embeddings of tokens", "/v1/embeddings", {"input": [[1, 2, 3]]}, 400, "input", "valid"),
    ("query a number", "/chat/query", {"message": 42}, 400, "message", "valid string"),
    ("query extra field", "/chat/query", {"message": "hi", "mood": "sad"}, 400, "mood",
     "Extra inputs"),
    ("remember nothing", "/memory", {"text": ""}, 400, "text", "at least 1"),
    ("remember in a bad scope", "/memory", {"text": "x", "scope": "galaxy"}, 400, "scope",
     "Input should be"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "words"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bad_requests_are_clear_4xx(
    server: Server,
    path: str,
    body: dict[str, Any] | bytes,
    status: int,
    param: str | None,
    words: str,
) -> None:
    with server.client() as http:
        if isinstance(body, bytes):
            r = http.post(path, content=body, headers={"Content-Type": "application/json"})
        else:
            r = http.post(path, json=body)
    assert r.status_code == status, r.text
    err = error_of(r)
    assert words in err["message"], err
    if param is not None:
        assert err["param"] == param
    assert err["type"] == "invalid_request_error"


def test_bad_query_parameters_and_routes(server: Server) -> None:
    with server.client() as http:
        assert http.get("/memory/search").status_code == 400  # q is required
        assert http.get("/memory/search", params={"q": "x", "k": 0}).status_code == 400
        assert http.get("/conversations", params={"limit": "many"}).status_code == 400
        assert http.get("/conversations/abc").status_code == 400
        # Integers past SQLite's 64 bits are the client's mistake (400), not an
        # OverflowError reaching the database (500).
        huge = str(2**65 + 1)
        assert http.get("/conversations", params={"offset": huge}).status_code == 400
        assert http.get(f"/conversations/{huge}").status_code == 400
        turn = {"message": "hi", "conversation_id": int(huge)}
        assert http.post("/chat/query", json=turn).status_code == 400
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**30}
        assert http.post(CHAT, json=chat).status_code == 400
        assert http.get("/health").status_code == 200  # and it goes on serving
        missing = http.get("/v2/everything")
        assert missing.status_code == 404 and "no such endpoint" in error_of(missing)["message"]
        assert http.put("/v1/models").status_code == 405
        without_type = http.post(CHAT, content=b'{"messages": []}')
        assert without_type.status_code == 400


def test_huge_body_is_413_and_the_server_still_serves(server: Server) -> None:
    with server.client() as http:
        r = http.post(CHAT, json={"messages": [{"role": "user", "content": "x" * 2_000_000}]})
        assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"
        ok = http.post(CHAT, json={"messages": USER, "tars": {"memory": False, "store": False}})
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
