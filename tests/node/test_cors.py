"""Browser apps (a governance dApp) call the HTTP API from the origins `api.cors_origins`
names, and from no other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from node.api.app import create_app
from node.cli.daemon import serve_app
from node.runtime import open_node
from node.settings import ApiSettings
from node.store import Store

DAPP = "https://vote.example.org"


@pytest.fixture
def store() -> Iterator[Store]:
    store = Store.open("sqlite://")
    yield store
    store.close()


def preflight(client: TestClient, origin: str, path: str = "/gov/ballots") -> dict[str, str]:
    reply = client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    return dict(reply.headers)


def test_preflight_from_an_allowed_origin_is_answered(store: Store) -> None:
    client = TestClient(create_app(store, cors_origins=[DAPP]))
    allowed = preflight(client, DAPP)
    assert allowed["access-control-allow-origin"] == DAPP
    assert "POST" in allowed["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in allowed
    simple = client.get("/health", headers={"Origin": DAPP})
    assert simple.headers["access-control-allow-origin"] == DAPP

    assert "access-control-allow-origin" not in preflight(client, "https://evil.example")
    other = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_no_origin_is_allowed_by_default(store: Store) -> None:
    client = TestClient(create_app(store))
    assert "access-control-allow-origin" not in preflight(client, DAPP)
    reply = client.get("/health", headers={"Origin": DAPP})
    assert "access-control-allow-origin" not in reply.headers


@pytest.mark.parametrize("origin", [f"{DAPP}/", f"{DAPP}/vote", "vote.example.org", "*"])
def test_cors_origins_must_be_origins(origin: str) -> None:
    with pytest.raises(ValidationError, match="not an origin"):
        ApiSettings(cors_origins=[origin])
    assert ApiSettings(cors_origins=[DAPP, "http://localhost:5173"]).cors_origins[0] == DAPP


def test_serve_reads_cors_origins_from_the_settings(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(f'[api]\ncors_origins = ["{DAPP}"]\n')
    node = open_node(home)
    try:
        client = TestClient(serve_app(node))
        assert preflight(client, DAPP)["access-control-allow-origin"] == DAPP
        assert "access-control-allow-origin" not in preflight(client, "https://evil.example")
    finally:
        node.store.close()
