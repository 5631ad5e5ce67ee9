"""Edge cases of clipaudit.hub against what the hub client itself does: the repo ids it accepts,
the cache layouts it reads offline, where it downloads from (HF_ENDPOINT, a proxy) and which
variable made it offline. No test reaches the network: the socket is replaced."""

from __future__ import annotations

import socket

import pytest

from clipaudit import hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("repo", "valid"),
    [
        ("org/na.me-x_y", True),
        ("o/" + "a" * 96, True),
        ("a" * 97, False),  # the hub's limit is 96 a part
        ("org/name@main", False),  # neither open_clip nor sentence-transformers parse a revision
        (f"org/name@{COMMIT}", False),
        ("hf-hub:org/name", False),  # callers strip the prefix first
        ("org/name/", False),
        ("../x", False),  # a path, never a repo
    ],
)
def test_valid_repo_id_agrees_with_the_hub_rules(repo, valid):
    assert hub.valid_repo_id(repo) is valid


@pytest.mark.parametrize(
    ("ref", "snapshot", "found"),
    [
        (COMMIT, COMMIT, COMMIT),
        (COMMIT, None, None),  # refs/main names a snapshot that is gone
        (None, COMMIT, None),  # a pinned download: the hub client offline reads main, not it
        ("f" * 40, COMMIT, None),  # refs/main names another commit than the snapshot held
    ],
)
def test_the_cache_is_read_as_the_hub_client_reads_it_offline(
    ref, snapshot, found, tmp_path, monkeypatch
):
    from huggingface_hub import constants

    repo = tmp_path / "models--org--name"
    if ref:
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(ref)
    if snapshot:
        (repo / "snapshots" / snapshot).mkdir(parents=True)
        (repo / "snapshots" / snapshot / "open_clip_config.json").write_text("{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    names = ["open_clip_model.safetensors", "open_clip_config.json"]
    assert hub.in_hub_cache("org/name", names) is (found is not None)
    assert hub.cached_commit("org/name", names) == found


@pytest.mark.parametrize(
    ("endpoint", "tried", "refused"),
    [
        ("https://huggingface.co", "huggingface.co", "huggingface.co cannot be reached"),
        ("https://hf-mirror.example/", "hf-mirror.example", "hf-mirror.example cannot be reached"),
        ("http://mirror.local:8080", "mirror.local:8080", "mirror.local:8080 cannot be reached"),
        ("http://mirror.local", "mirror.local:80", "mirror.local:80 cannot be reached"),
        (
            "hf-mirror.example",  # no scheme: the hub client cannot use it either
            None,
            "HF_ENDPOINT 'hf-mirror.example' is no URL (set it to https://HOST, or unset it)",
        ),
    ],
)
def test_the_hub_checked_is_the_one_hf_endpoint_names(endpoint, tried, refused, monkeypatch):
    """Behind a mirror (HF_ENDPOINT) the hub client never asks huggingface.co: that one being
    unreachable must not refuse a download, nor its being up hide an unreachable mirror."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint.rstrip("/"))
    hosts = []
    monkeypatch.setattr(hub, "reachable", lambda host, timeout=3.0: hosts.append(host) or False)
    assert hub.hub_refused() == refused
    assert hosts == ([tried] if tried else [])


@pytest.mark.parametrize(
    ("env", "host", "address"),
    [
        ({}, "huggingface.co", ("huggingface.co", 443)),
        ({}, "mirror.local:8080", ("mirror.local", 8080)),
        ({"HTTPS_PROXY": "http://proxy.example:3128"}, "huggingface.co", ("proxy.example", 3128)),
        ({"https_proxy": "http://proxy.example"}, "huggingface.co", ("proxy.example", 80)),
        ({"ALL_PROXY": "http://proxy.example:3128"}, "huggingface.co", ("proxy.example", 3128)),
        (
            {"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": "huggingface.co"},
            "huggingface.co",
            ("huggingface.co", 443),
        ),
    ],
)
def test_reachable_connects_where_the_hub_client_would(env, host, address, monkeypatch):
    """The hub client (httpx) goes through the proxy the environment names: where only the
    proxy lets a connection out, a direct connection failing says nothing."""
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    connected = []

    class Connection:
        def close(self) -> None:
            pass

    monkeypatch.setattr(
        socket, "create_connection", lambda addr, timeout: connected.append(addr) or Connection()
    )
    assert hub.reachable(host)
    assert connected == [address]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TRANSFORMERS_OFFLINE": "1"}, "TRANSFORMERS_OFFLINE"),
        ({"HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "1"}, "TRANSFORMERS_OFFLINE"),
        ({"HF_HUB_OFFLINE": "yes", "TRANSFORMERS_OFFLINE": "1"}, "HF_HUB_OFFLINE"),
        ({}, "HF_HUB_OFFLINE"),  # set in-process (the constant), no variable to name otherwise
    ],
)
def test_the_offline_message_names_the_variable_that_set_it(env, named, monkeypatch):
    """The hub client is offline under TRANSFORMERS_OFFLINE too: telling the user to unset
    HF_HUB_OFFLINE, which is not set, changes nothing."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "reachable", lambda host, timeout=3.0: pytest.fail("network asked"))
    assert hub.hub_refused() == f"{named} is set (unset it to download)"
