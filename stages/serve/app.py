"""The web app: a JSON API over an :class:`~stages.serve.engine.Engine` and the static page.

Routes (all GET unless noted)::

    /                          the page (static/index.html; static/app.js, static/style.css)
    /api/config                built indexes (backbone x dataset x embedding), defaults, limits
    /api/images                a page of the collection's images (?page=&per_page=)
    /api/images/{id}           one image and its extracted objects (boxes)
    /images/{id}.jpg           the image's pixels as JPEG (?max_side=); by id only, never by path
    POST /api/search           {image_id, box, k, exclude_image, ...}: top-k objects for a box of a dataset image
    POST /api/search/upload    body = photo bytes, ?box=x1,y1,x2,y2: top-k for a box of an uploaded photo
    POST /api/more             {token, offset, k}: the next results of an earlier query
    /api/metrics               the run's metrics file and the evaluate stage's pictures
    /metrics/{b}/{d}/{name}    one of those pictures (only names the evaluate folder holds)

Every backbone/dataset/embedding is checked against params and the built indexes; unknown ids
and paths are 404, bad input 400, an upload over the size limit 413.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from stages import layout
from stages.errors import InputError, UserError
from stages.serve.engine import Engine, NotFound, Selection
from stages.serve.images import decode_upload, parse_box

STATIC = Path(str(resources.files("stages.serve") / "static"))
MAX_K = 100  # results per request
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


class TooLarge(InputError):
    """An upload over the server's size limit (HTTP 413)."""


class BoxSearch(BaseModel):
    image_id: int
    box: list[float] | None = Field(None, min_length=4, max_length=4, description="x1 y1 x2 y2, pixels")
    backbone: str | None = None
    dataset: str | None = None
    embedding: str = "model"
    k: int | None = Field(None, ge=1, le=MAX_K)
    exclude_image: bool = Field(False, description="leave out the objects of the query's own image")


class More(BaseModel):
    token: str = Field(..., max_length=64)
    offset: int = Field(..., ge=0)
    k: int | None = Field(None, ge=1, le=MAX_K)


def allowed_hosts(host: str) -> list[str]:
    """Host headers the server answers: loopback names, plus ``host`` itself; any when bound to all."""
    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    return sorted({*LOOPBACK_NAMES, host})


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused with :class:`TooLarge` as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the upload is {int(declared):,} bytes; the limit is {limit:,} bytes (--max-upload-mb)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"the upload is over the limit of {limit:,} bytes (--max-upload-mb)")
    return bytes(body)


def create_app(
    engine: Engine,
    default: Selection,
    k: int = 10,
    max_upload_mb: float = 20.0,
    host: str = "127.0.0.1",
) -> FastAPI:
    """The app over ``engine``; ``default`` is the selection the page opens with."""
    app = FastAPI(title="MS-UGCML object search", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(host))
    limit = int(max_upload_mb * 1024 * 1024)
    k_default = max(1, min(int(k), MAX_K))

    def selection(backbone: str | None, dataset: str | None, embedding: str = "model") -> Selection:
        if embedding not in layout.EMBEDDINGS:
            raise InputError(f"embedding must be one of {list(layout.EMBEDDINGS)}, got {embedding!r}")
        return Selection(backbone or default.backbone, dataset or default.dataset, embedding)

    def pair(backbone: str | None, dataset: str | None) -> Selection:
        """A (backbone, dataset) with a built index (any embedding)."""
        sel = selection(backbone, dataset)
        for entry in engine.catalog():
            if (entry["backbone"], entry["dataset"]) == (sel.backbone, sel.dataset):
                return sel
        raise NotFound(f"no built index for backbone {sel.backbone!r} and dataset {sel.dataset!r}")

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFound) else 413 if isinstance(exc, TooLarge) else 400
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'"
        )
        return response

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/config")
    def config() -> dict:
        return {
            "catalog": engine.catalog(),
            "default": default.__dict__,
            "k": k_default,
            "max_k": MAX_K,
            "max_upload_mb": max_upload_mb,
        }

    @app.get("/api/images")
    def images(
        backbone: str | None = None,
        dataset: str | None = None,
        page: int = Query(0, ge=0),
        per_page: int = Query(24, ge=1, le=200),
    ) -> dict:
        sel = pair(backbone, dataset)
        return engine.images_page(sel.backbone, sel.dataset, page, per_page)

    @app.get("/api/images/{image_id:int}")
    def image(image_id: int, backbone: str | None = None, dataset: str | None = None) -> dict:
        sel = pair(backbone, dataset)
        return engine.image_detail(sel.backbone, sel.dataset, image_id)

    @app.get("/images/{image_id:int}.jpg")
    def picture(
        image_id: int,
        backbone: str | None = None,
        dataset: str | None = None,
        max_side: int = Query(1024, ge=32, le=4096),
    ) -> Response:
        sel = pair(backbone, dataset)
        data = engine.picture(sel.backbone, sel.dataset, image_id, max_side)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/api/search")
    def search(body: BoxSearch) -> dict:
        sel = selection(body.backbone, body.dataset, body.embedding)
        box = parse_box(body.box)
        return engine.search_box(sel, body.image_id, box, body.k or k_default, body.exclude_image)

    @app.post("/api/search/upload")
    async def search_upload(
        request: Request,
        box: str | None = Query(None, max_length=200, description="x1,y1,x2,y2 in pixels; none: the whole photo"),
        backbone: str | None = None,
        dataset: str | None = None,
        embedding: str = "model",
        k: int | None = Query(None, ge=1, le=MAX_K),
    ) -> dict:
        sel = selection(backbone, dataset, embedding)
        query_box = parse_box(box)
        data = await read_limited(request, limit)

        def run() -> dict:
            return engine.search_photo(sel, decode_upload(data), query_box, k or k_default)

        return await run_in_threadpool(run)

    @app.post("/api/more")
    def more(body: More) -> dict:
        return engine.more(body.token, body.offset, body.k or k_default)

    @app.get("/api/metrics")
    def metrics(backbone: str | None = None, dataset: str | None = None) -> dict:
        sel = selection(backbone, dataset)
        return engine.metrics(sel.backbone, sel.dataset)

    @app.get("/metrics/{backbone}/{dataset}/{name}")
    def metrics_picture(backbone: str, dataset: str, name: str) -> FileResponse:
        return FileResponse(engine.metrics_picture(backbone, dataset, name), media_type="image/png")

    return app
