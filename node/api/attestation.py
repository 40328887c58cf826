"""HTTP routes that publish this node's TEE evidence bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from node.errors import CorruptStoreError, NotFoundError
from node.settings import Settings

EVIDENCE_FILE = Path("attestation") / "evidence.json"


def evidence_path(settings: Settings) -> Path:
    """Where `attest collect` writes, and the API reads, the node's evidence bundle."""
    return settings.home / EVIDENCE_FILE


def attestation_router(path: Path) -> APIRouter:
    """GET /attestation/evidence: the latest bundle, as `attest collect` wrote it."""
    router = APIRouter(prefix="/attestation", tags=["attestation"])

    @router.get("/evidence")
    def evidence() -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFoundError(
                "this node has collected no attestation evidence (asi-node attest collect)"
            ) from None
        except (OSError, ValueError) as exc:
            raise CorruptStoreError(f"{path}: unreadable evidence bundle: {exc}") from None
        if not isinstance(data, dict):
            raise CorruptStoreError(f"{path}: the evidence bundle is not a JSON object")
        return data

    return router
