"""NDIF plumbing: the API key, the server's host, fail-fast checks before a remote model is built, the
backend a remote run uses, and nnsight's remote failures as saekit's `RemoteError`.

The key is read when it is needed (never at import) and never printed or pickled into a request.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from ..errors import ModelLoadError, RemoteError


def ndif_api_key() -> str | None:
    """The NDIF API key: $NDIF_API_KEY (read now), else nnsight's own config (`nnsight login`)."""
    key = os.environ.get("NDIF_API_KEY")
    if key:
        return key
    from nnsight.schema.config import CONFIG

    return CONFIG.API.APIKEY or None


def ndif_host(remote: bool | str) -> str:
    """The server a `remote=` value names: a URL string, else $NDIF_HOST / nnsight's configured host."""
    if isinstance(remote, str) and remote != "local":
        return remote.rstrip("/")
    host = os.environ.get("NDIF_HOST")
    if host:
        return host.rstrip("/")
    from nnsight.schema.config import CONFIG

    return CONFIG.API.HOST.rstrip("/")


def check_remote(remote: bool | str) -> str:
    """Fail fast, before any model is built: a usable `remote=` value, a key, and a server that answers.

    Returns the host ('local' for nnsight's in-process simulation of a remote run)."""
    if remote == "local":
        return "local"
    if remote is not True and not isinstance(remote, str):
        raise ModelLoadError(f"remote must be False, True, 'local' or a server URL, got {remote!r}")
    host = ndif_host(remote)
    if not host.startswith(("http://", "https://")):
        raise ModelLoadError(f"remote={remote!r} is not a server URL: pass True (NDIF), 'local', or 'https://host:port'")
    key = ndif_api_key()
    if not key:
        raise RemoteError(
            "no NDIF API key: set the environment variable NDIF_API_KEY (or run `nnsight login`) "
            "before load_model(..., remote=True); get a key at https://login.ndif.us"
        )
    import httpx

    failure = None
    try:  # the key rides along, so a server that checks it refuses a wrong one now, not at the first trace
        response = httpx.get(f"{host}/status", headers={"ndif-api-key": key}, timeout=httpx.Timeout(5.0, read=15.0))
        code = response.status_code
    except httpx.HTTPError as e:
        failure, code = f"{type(e).__name__}: {e}", None
    # raised outside the except block: no exception chain (whose request carries the key) survives
    if failure is not None:
        raise RemoteError(
            f"cannot reach the NDIF server at {host} ({failure}); check the network, "
            f"$NDIF_HOST, or NDIF's status page, or run locally with remote=False"
        )
    if code in (401, 403):
        raise RemoteError(
            f"the NDIF server at {host} refused the API key (HTTP {code}): set NDIF_API_KEY to a valid key "
            f"(or run `nnsight login`); get one at https://login.ndif.us"
        )
    if code >= 400:
        raise RemoteError(f"the NDIF server at {host} answered HTTP {code} to its status call; check NDIF's status page")
    return host


def register_saekit() -> None:
    """Ship saekit's helpers by value with each request (NDIF does not have saekit installed)."""
    import nnsight

    nnsight.register("saekit")


def model_key(nn_model: Any, name: str) -> str:
    """The key NDIF knows the model by (a Hub lookup canonicalises a repo id)."""
    try:
        return nn_model.to_model_key()
    except Exception as e:  # the Hub lookup that canonicalises the repo id
        raise RemoteError(f"could not resolve {name!r} on the Hugging Face Hub for NDIF: {e}") from None


def remote_backend(nn_model: Any, remote: bool | str, model_id: str) -> Any:
    """nnsight's blocking `RemoteBackend` for the server `remote` names; the API key is read at each use.

    Built here rather than by nnsight's `remote=True`, so that the key is read when the run starts (not
    at nnsight's import) and a URL string picks the server. The backend object never holds the key (it
    is a property reading `ndif_api_key()`), so printing, pickling or a traceback's locals cannot leak it.
    """
    from nnsight.intervention.backends.remote import RemoteBackend

    class KeylessBackend(RemoteBackend):
        @property
        def api_key(self) -> str:
            return ndif_api_key() or ""

        @api_key.setter
        def api_key(self, value: str) -> None:  # nnsight's __init__ assigns it: keep nothing
            pass

    return KeylessBackend(model_id, host=ndif_host(remote), env=nn_model._remoteable_get_env(), blocking=True)


@contextlib.contextmanager
def remote_errors(remote: bool | str) -> Iterator[None]:
    """nnsight's remote failures (a server error, a refused key) as saekit's `RemoteError`."""
    from nnsight.intervention.backends.remote import RemoteError as NnsightRemoteError

    failure = None
    try:
        yield
    except NnsightRemoteError as e:
        failure = str(e)
    if failure is not None:  # raised here, outside the handler: no chain back to nnsight's error and its request
        hint = " (check NDIF_API_KEY)" if any(w in failure.lower() for w in ("api key", "unauthor", "401", "403")) else ""
        _raise_unchained(RemoteError(f"the remote run on {ndif_host(remote)} failed: {failure}{hint}"))


def _raise_unchained(err: Exception) -> None:
    """Raise `err` with no `__context__`: the error being handled (nnsight's, httpx's) holds the request,
    and the request holds the API key."""
    try:
        raise err
    finally:
        err.__context__ = None
