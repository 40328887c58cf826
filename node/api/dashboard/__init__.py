"""The web dashboard at `/` and the API docs at `/docs`, every asset served by the node
itself (no CDN): the dashboard is one page, one script and one stylesheet in `static/`,
which reads the JSON API like any other client; the docs use the Swagger UI bundle that
the `fastapi-offline` package ships. ReDoc stays off: its page loads a logo from its
vendor's CDN."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from node.errors import NotFoundError

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
ASSETS = ("dashboard.js", "dashboard.css")
DOC_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")
# Swagger UI asks an outside validator about the schema unless told not to.
SWAGGER_PARAMETERS: dict[str, Any] = {"validatorUrl": None}


def _asset(package: str, name: str) -> Response:
    """`static/<name>` of `package`, with its media type."""
    suffix = name[name.rfind(".") :]
    # Each response revalidates: an upgraded node serves its new script at once.
    return Response(
        resources.files(package).joinpath("static", name).read_bytes(),
        media_type=MEDIA_TYPES[suffix],
        headers={"Cache-Control": "no-cache"},
    )


def dashboard_router(title: str, openapi_url: str = "/openapi.json") -> APIRouter:
    """GET / (the dashboard), GET /ui/{name} (its script and stylesheet), and the API
    docs with their assets under /docs/assets (left out of the OpenAPI schema)."""
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse, tags=["dashboard"])
    def index() -> Response:
        """The dashboard: campaigns, leaderboards, lineage, loss curves, records with
        their proofs, directives, proposals and ballots, anchors and the log's audit."""
        return _asset(__name__, "index.html")

    @router.get("/ui/{name}", tags=["dashboard"], response_class=Response)
    def asset(name: str) -> Response:
        """The dashboard's script (`dashboard.js`) and stylesheet (`dashboard.css`)."""
        if name not in ASSETS:
            raise NotFoundError(f"no dashboard asset {name!r}; there are {', '.join(ASSETS)}")
        return _asset(__name__, name)

    @router.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - API docs",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon.png",
            swagger_ui_parameters=SWAGGER_PARAMETERS,
        )

    @router.get("/docs/assets/{name}", include_in_schema=False)
    def doc_asset(name: str) -> Response:
        if name not in DOC_ASSETS:
            raise NotFoundError(f"no docs asset {name!r}")
        return _asset("fastapi_offline", name)

    return router
