"""The OpenAI-compatible client against a loopback server on 127.0.0.1: request format, errors, retries,
429 rate limits, malformed replies, timeouts, the disk cache, and the key never leaking."""

from __future__ import annotations

import socket
import time

import pytest

from saekit.errors import ConfigError, EndpointError
from saekit.evals import OpenAIBackend
from llm_loopback import Loopback

MSG = [{"role": "user", "content": "hello"}]


def ok(text="1"):
    return (200, {"choices": [{"message": {"role": "assistant", "content": text}}]})


def test_request_format_and_key_never_leaks(tmp_path):
    with Loopback(lambda body: ok("hi")) as srv:
        llm = OpenAIBackend("m1", srv.url, api_key="sk-TOPSECRET", cache_dir=tmp_path, max_tokens=7, backoff=0)
        assert llm.complete(MSG) == "hi"
    body, headers = srv.requests[0], srv.headers[0]
    assert srv.paths == ["/v1/chat/completions"]
    assert body == {"model": "m1", "messages": MSG, "max_tokens": 7, "temperature": 0.0, "stream": False}
    assert headers["Authorization"] == "Bearer sk-TOPSECRET"
    assert "TOPSECRET" not in repr(llm) and "api_key=set" in repr(llm)
    assert all("TOPSECRET" not in p.read_text() for p in tmp_path.iterdir())


def test_retries_on_429_and_500_then_succeeds():
    replies = iter([(429, {"error": "slow down"}, {"Retry-After": "0"}), (500, {"error": "boom"}), ok("done")])
    with Loopback(lambda body: next(replies)) as srv:
        llm = OpenAIBackend("m", srv.url, backoff=0, retries=3)
        assert llm.complete(MSG) == "done"
        assert srv.count == 3


def test_gives_up_after_retries_and_does_not_retry_4xx():
    with Loopback(lambda body: (503, {"error": "down"})) as srv:
        llm = OpenAIBackend("m", srv.url, backoff=0, retries=2)
        with pytest.raises(EndpointError, match="after 3 tries: HTTP 503"):
            llm.complete(MSG)
        assert srv.count == 3
    with Loopback(lambda body: (401, {"error": "bad key"})) as srv:
        with pytest.raises(EndpointError, match="refused"):
            OpenAIBackend("m", srv.url, api_key="sk-x", backoff=0).complete(MSG)
        assert srv.count == 1


def test_malformed_replies_are_retried_then_named():
    replies = iter([(200, b"not json"), (200, {"choices": []}), ok("fine")])
    with Loopback(lambda body: next(replies)) as srv:
        assert OpenAIBackend("m", srv.url, backoff=0, retries=3).complete(MSG) == "fine"
    with Loopback(lambda body: (200, {"choices": [{"message": {"content": None}}]})) as srv:
        with pytest.raises(EndpointError, match="not text"):
            OpenAIBackend("m", srv.url, backoff=0, retries=1).complete(MSG)


def test_timeout_is_bounded():
    def slow(body):
        time.sleep(1.0)
        return ok()
    with Loopback(slow) as srv:
        llm = OpenAIBackend("m", srv.url, timeout=0.2, retries=1, backoff=0)
        t0 = time.perf_counter()
        with pytest.raises(EndpointError, match="timed out"):
            llm.complete(MSG)
        assert time.perf_counter() - t0 < 1.5


def test_cache_and_concurrency(tmp_path):
    with Loopback(lambda body: ok(body["messages"][0]["content"].upper())) as srv:
        llm = OpenAIBackend("m", srv.url, cache_dir=tmp_path, concurrency=3, backoff=0)
        batch = [[{"role": "user", "content": f"q{i}"}] for i in range(6)]
        assert llm.complete_many(batch) == [f"Q{i}" for i in range(6)]
        assert srv.count == 6
        assert llm.complete_many(batch) == [f"Q{i}" for i in range(6)]
        assert srv.count == 6


def test_unreachable_endpoint_keeps_cached_progress(tmp_path):
    with Loopback(lambda body: ok("x")) as srv:
        url = srv.url
        OpenAIBackend("m", url, cache_dir=tmp_path).complete(MSG)
    # the port is closed now: nothing listens there
    llm = OpenAIBackend("m", url, cache_dir=tmp_path, backoff=0, retries=1, timeout=2)
    assert llm.complete(MSG) == "x"  # cached progress kept
    with pytest.raises(EndpointError, match="cannot reach"):
        llm.complete_many([MSG, [{"role": "user", "content": "new"}]])
    assert len(list(tmp_path.iterdir())) == 1


def test_bad_config_is_named(monkeypatch):
    monkeypatch.delenv("SAEKIT_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="no endpoint"):
        OpenAIBackend("m")
    with pytest.raises(ConfigError, match="http"):
        OpenAIBackend("m", "localhost:8000")
