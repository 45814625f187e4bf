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
    if not ndif_api_key():
        raise RemoteError(
            "no NDIF API key: set the environment variable NDIF_API_KEY (or run `nnsight login`) "
            "before load_model(..., remote=True); get a key at https://login.ndif.us"
        )
    import httpx

    try:
        httpx.get(f"{host}/status", timeout=httpx.Timeout(5.0, read=15.0)).raise_for_status()
    except httpx.HTTPError as e:
        raise RemoteError(
            f"cannot reach the NDIF server at {host} ({type(e).__name__}: {e}); check the network, "
            f"$NDIF_HOST, or NDIF's status page, or run locally with remote=False"
        ) from None
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


def remote_backend(nn_model: Any, remote: bool | str, key: str) -> Any:
    """nnsight's blocking `RemoteBackend` for the server `remote` names, with the API key read now.

    Built here rather than by nnsight's `remote=True`, so that the key is read when the run starts (not
    at nnsight's import) and a URL string picks the server; the backend is never pickled into the request.
    """
    from nnsight.intervention.backends.remote import RemoteBackend

    return RemoteBackend(
        key, host=ndif_host(remote), api_key=ndif_api_key(), env=nn_model._remoteable_get_env(), blocking=True
    )


@contextlib.contextmanager
def remote_errors(remote: bool | str) -> Iterator[None]:
    """nnsight's remote failures (a server error, a refused key) as saekit's `RemoteError`."""
    from nnsight.intervention.backends.remote import RemoteError as NnsightRemoteError

    try:
        yield
    except NnsightRemoteError as e:
        msg = str(e)
        hint = " (check NDIF_API_KEY)" if any(w in msg.lower() for w in ("api key", "unauthor", "401", "403")) else ""
        raise RemoteError(f"the remote run on {ndif_host(remote)} failed: {msg}{hint}") from None
