"""HTTP routes of the transparency log: checkpoint, entries, proofs, the export bundle."""

from __future__ import annotations

import base64
import itertools
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import StreamingResponse

from node.tlog.log import LogView, SignedCheckpoint

MAX_PAGE = 1000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _checkpoint(cp: SignedCheckpoint) -> dict[str, Any]:
    return {
        "origin": cp.origin,
        "log_id": cp.log_id.hex(),
        "tree_size": cp.tree_size,
        "root_hash": _b64(cp.root_hash),
        "note": cp.note,
    }


def log_router(view: LogView) -> APIRouter:
    """The routes over one log view; hashes and envelopes are base64."""
    router = APIRouter(prefix="/log", tags=["transparency log"])

    @router.get("/checkpoint")
    def checkpoint() -> dict[str, Any]:
        """The latest signed checkpoint (C2SP note in `note`)."""
        cp = view.latest_checkpoint()
        if cp is None:
            raise HTTPException(404, "the log has no checkpoint yet")
        return _checkpoint(cp)

    @router.get("/checkpoints")
    def checkpoints() -> list[dict[str, Any]]:
        return [_checkpoint(cp) for cp in view.checkpoints()]

    @router.get("/entries")
    def entries(start: int = Query(ge=0), end: int = Query(ge=0)) -> list[dict[str, Any]]:
        """Entries [start, end), at most 1000 per call; `envelope` is the leaf's bytes."""
        if end < start or end - start > MAX_PAGE:
            raise HTTPException(400, f"need start <= end <= start + {MAX_PAGE}")
        return [
            {"index": e.index, "kind": e.kind, "envelope": _b64(e.envelope)}
            for e in view.entries(start, end)
        ]

    @router.get("/proof/inclusion")
    def inclusion(index: int = Query(ge=0), tree_size: int = Query(ge=1)) -> dict[str, Any]:
        proof = view.inclusion_proof(index, tree_size)
        return {"index": index, "tree_size": tree_size, "proof": [_b64(h) for h in proof]}

    @router.get("/proof/consistency")
    def consistency(first: int = Query(ge=1), second: int = Query(ge=1)) -> dict[str, Any]:
        proof = view.consistency_proof(first, second)
        return {"first": first, "second": second, "proof": [_b64(h) for h in proof]}

    @router.get("/bundle")
    def bundle(format: Literal["json", "lines"] = "json") -> Response:
        """The export bundle `asi-node audit URL` checks: one JSON document (version 2), or
        with `format=lines` line-delimited (version 3), streamed as it is read."""
        if format == "lines":
            lines = view.export_lines()
            first = next(lines)  # a log without a checkpoint fails here, as a 404
            return StreamingResponse(
                itertools.chain([first], lines), media_type="application/x-ndjson"
            )
        return Response(view.export().to_bytes(), media_type="application/json")

    return router
