"""The Hugging Face hub as a load sees it before asking it anything: whether a repo id is
well-formed, whether the hub cache holds a repo's files, and why nothing can be downloaded now.

Models, encoders and datasets check these to fail in seconds offline (the hub client would retry
for a minute, then blame the name). Light on purpose: the error paths of a caption or image dataset
or a sentence-transformers encoder import neither torch nor open_clip (about 6 s), and
huggingface_hub is imported inside the functions. :func:`download_refused` and :func:`hub_refused`
look up :func:`reachable` here when called: tests replace ``clipaudit.hub.reachable`` to take the
network away from every caller.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path


def hub_refused() -> str | None:
    """Why nothing can be downloaded from the hub now, in words, or None when it can: with
    HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set the hub client downloads nothing, however open
    the network; else it downloads from the host HF_ENDPOINT names (huggingface.co unless it
    names a mirror)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        # the hub client reads TRANSFORMERS_OFFLINE only when HF_HUB_OFFLINE is unset or empty:
        # name the one to unset
        variable = (
            "TRANSFORMERS_OFFLINE"
            if not os.environ.get("HF_HUB_OFFLINE") and os.environ.get("TRANSFORMERS_OFFLINE")
            else "HF_HUB_OFFLINE"
        )
        return f"{variable} is set (unset it to download)"
    host = hub_host()
    if host is None:
        return f"HF_ENDPOINT {constants.ENDPOINT!r} is no URL (set it to https://HOST, or unset it)"
    return download_refused(host)


def hub_host() -> str | None:
    """The host the hub client downloads from (``NAME``, or ``NAME:PORT`` off port 443), as
    HF_ENDPOINT names it; None when HF_ENDPOINT is no URL."""
    from huggingface_hub import constants

    endpoint = urllib.parse.urlsplit(constants.ENDPOINT)
    if not endpoint.hostname:
        return None
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    return endpoint.hostname if port == 443 else f"{endpoint.hostname}:{port}"


def download_refused(host: str | None) -> str | None:
    """Why nothing can be downloaded from ``host`` (a weights URL's) now, in words, or None."""
    return None if reachable(host) else f"{host} cannot be reached"


def reachable(host: str | None, timeout: float = 3.0) -> bool:
    """Whether ``host`` (``NAME`` or ``NAME:PORT``, port 443 by default) accepts a connection
    within ``timeout`` seconds: through the HTTPS proxy the environment names, unless NO_PROXY
    exempts the host, as the hub client (httpx) and urllib connect."""
    if not host:
        return False
    target = urllib.parse.urlsplit(f"//{host}")
    proxies = urllib.request.getproxies()
    proxy = proxies.get("https") or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(target.hostname or host):
        target = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = target.port or (80 if target.scheme == "http" else 443)
    try:
        socket.create_connection((target.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def hub_cache_words() -> str:
    """The hub cache this process reads, for a message: where to copy downloaded models."""
    from huggingface_hub import constants

    return f"the Hugging Face hub cache {constants.HF_HUB_CACHE} (HF_HUB_CACHE or HF_HOME move it)"


def valid_repo_id(repo: str) -> bool:
    """Whether ``repo`` is a well-formed Hugging Face repo id (``name`` or ``org/name``)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError:
        return False
    return True


def in_hub_cache(repo: str, filenames: Sequence[str], cache_dir: str | None = None) -> bool:
    """Whether the Hugging Face hub cache holds one of ``filenames`` of the valid repo id ``repo``
    (no network)."""
    from huggingface_hub import try_to_load_from_cache

    return any(
        isinstance(try_to_load_from_cache(repo, name, cache_dir=cache_dir), str)
        for name in filenames
    )


def cached_commit(repo: str, names: Sequence[str]) -> str | None:
    """The commit of the hub-cache snapshot that holds the first of ``names`` found there (the
    folder a load reads them from), or None."""
    from huggingface_hub import try_to_load_from_cache

    for name in names:
        path = try_to_load_from_cache(repo, name)
        if isinstance(path, str):
            return Path(path).parent.name  # snapshots/<commit>/<name>
    return None


def hub_head(repo: str) -> str | None:
    """The newest commit of the model repo ``repo`` on the hub; None offline or unanswered."""
    from huggingface_hub import HfApi, constants

    if constants.is_offline_mode():
        return None
    try:
        return HfApi().model_info(repo, timeout=10).sha
    # unreachable, timed out, gated, rate-limited: the load reads the cache as it would then
    except Exception:
        return None
