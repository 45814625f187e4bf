"""Explainer/scorer backends: anything with `complete_many(list of chat messages) -> list of replies`.

- `OpenAIBackend`: any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp server, hosted APIs),
  standard library HTTP only; a concurrency limit, retries with exponential backoff (429 and 5xx, honouring
  Retry-After), timeouts, and an on-disk cache of replies keyed by (endpoint, model, messages, settings),
  so a rerun costs nothing. The API key is sent in the header and never stored, printed or cached.
- `LocalBackend`: a causal LM saekit can load (greedy decoding through `Model.generate`).

A reply that failed after every retry comes back as the exception (the caller counts it); an endpoint
that cannot be reached at all raises `EndpointError` after the replies already cached are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from ..durable import write_json
from ..errors import ConfigError, EndpointError
from .prompts import MalformedReply, Messages

API_KEY_ENV = "SAEKIT_LLM_API_KEY"
"""Environment variable read for the key when none is passed (then OPENAI_API_KEY)."""
BASE_URL_ENV = "SAEKIT_LLM_BASE_URL"
"""Environment variable read for the endpoint when none is passed (then OPENAI_BASE_URL)."""
RETRY_STATUS = (408, 409, 429, 500, 502, 503, 504)


class OpenAIBackend:
    """An OpenAI-compatible chat-completions endpoint (module docstring)."""

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, *,
                 concurrency: int = 4, retries: int = 4, backoff: float = 1.0, max_backoff: float = 30.0,
                 timeout: float = 60.0, max_tokens: int = 64, temperature: float = 0.0,
                 cache_dir: str | os.PathLike | None = None) -> None:
        base_url = base_url or os.environ.get(BASE_URL_ENV) or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise ConfigError(f"no endpoint: pass base_url= (e.g. 'http://localhost:8000/v1') or set {BASE_URL_ENV}")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ConfigError("pass the served model's name as model=")
        if concurrency < 1 or retries < 0 or timeout <= 0 or backoff < 0:
            raise ConfigError("concurrency must be >= 1, retries >= 0, timeout > 0 and backoff >= 0")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self._key = api_key or os.environ.get(API_KEY_ENV) or os.environ.get("OPENAI_API_KEY") or ""
        self.concurrency, self.retries, self.backoff, self.max_backoff = concurrency, retries, backoff, max_backoff
        self.timeout, self.max_tokens, self.temperature = timeout, max_tokens, temperature
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.calls = 0
        """HTTP requests sent (retries included); a rerun served from the cache sends none."""

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    def __repr__(self) -> str:
        return (f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r}, "
                f"api_key={'set' if self._key else 'unset'}, concurrency={self.concurrency})")

    # -- cache ----------------------------------------------------------------------------------

    def _cache_key(self, messages: Messages) -> str:
        blob = json.dumps([self.base_url, self.model, self.max_tokens, self.temperature, messages], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _cached(self, key: str) -> str | None:
        if self.cache_dir is None:
            return None
        f = self.cache_dir / f"{key}.json"
        try:
            return json.loads(f.read_text())["reply"]
        except (OSError, ValueError, KeyError):
            return None

    def _store(self, key: str, reply: str) -> None:
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            write_json({"model": self.model, "reply": reply}, self.cache_dir / f"{key}.json")

    # -- requests -------------------------------------------------------------------------------

    def _post(self, messages: Messages) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                           "temperature": self.temperature, "stream": False}).encode()
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        req = urllib.request.Request(f"{self.base_url}/chat/completions", data=body, headers=headers, method="POST")
        self.calls += 1
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            raw = resp.read()
        try:
            reply = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise MalformedReply(f"the endpoint's reply is not a chat completion: {raw[:80]!r}") from None
        if not isinstance(reply, str):
            raise MalformedReply(f"the endpoint's message content is {type(reply).__name__}, not text")
        return reply

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * 2 ** attempt * (1 + 0.25 * random.random())
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        time.sleep(min(delay, self.max_backoff))

    def complete(self, messages: Messages) -> str:
        """One reply, from the cache when there; retried on 429/5xx, timeouts and malformed replies.
        Raises `EndpointError` (unreachable, refused, or still failing after the retries)."""
        key = self._cache_key(messages)
        hit = self._cached(key)
        if hit is not None:
            return hit
        last = ""
        for attempt in range(self.retries + 1):
            retry_after = None
            try:
                reply = self._post(messages)
                self._store(key, reply)
                return reply
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} {e.reason}"
                if e.code not in RETRY_STATUS:
                    raise EndpointError(f"{self.base_url} refused the request ({last}); check the model name and key") from None
                retry_after = e.headers.get("Retry-After") if e.headers else None
            except urllib.error.URLError as e:
                reason = e.reason
                if isinstance(reason, (socket.timeout, TimeoutError)):
                    last = f"timed out after {self.timeout:g} s"
                else:
                    raise EndpointError(f"cannot reach {self.base_url} ({reason}); start the server or fix base_url. "
                                        "Replies already received are cached.") from None
            except (socket.timeout, TimeoutError):
                last = f"timed out after {self.timeout:g} s"
            except MalformedReply as e:
                last = str(e)
            except (ConnectionError, OSError) as e:
                last = f"connection failed ({type(e).__name__})"
            if attempt < self.retries:
                self._wait(attempt, retry_after)
        raise EndpointError(f"{self.base_url} still failing after {self.retries + 1} tries: {last}")

    def complete_many(self, batch: Sequence[Messages]) -> list[str | Exception]:
        """Replies in order, `concurrency` requests at a time; a failed one is its `EndpointError`, except
        that an unreachable endpoint raises at once (replies received so far stay cached)."""
        def one(m):
            try:
                return self.complete(m)
            except EndpointError as e:
                if "cannot reach" in str(e):
                    raise
                return e
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(one, batch))


class LocalBackend:
    """A causal LM saekit can load, as explainer or scorer (greedy decoding, one prompt at a time)."""

    def __init__(self, model: Any, *, max_new_tokens: int = 24) -> None:
        from ..lm import Model, load_model

        self.lm = model if isinstance(model, Model) else load_model(model)
        self.max_new_tokens = max_new_tokens

    @property
    def name(self) -> str:
        return f"local:{self.lm.name}" if hasattr(self.lm, "name") else "local"

    def __repr__(self) -> str:
        return f"LocalBackend({self.lm!r}, max_new_tokens={self.max_new_tokens})"

    def _prompt_ids(self, messages: Messages):
        import torch

        tok = self.lm.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = "\n\n".join(m["content"] for m in messages) + "\n"
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if not ids or ids[0] != self.lm.separator_id:
            ids = [self.lm.separator_id, *ids]
        return torch.tensor([ids], dtype=torch.long)

    def complete(self, messages: Messages) -> str:
        ids = self._prompt_ids(messages)
        new_ids, _ = self.lm.generate(ids, None, max_new_tokens=self.max_new_tokens)
        return self.lm.tokenizer.decode(new_ids[0].tolist(), skip_special_tokens=True)

    def complete_many(self, batch: Sequence[Messages]) -> list[str | Exception]:
        return [self.complete(m) for m in batch]
