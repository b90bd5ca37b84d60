"""The annotation tool as a local web app: a small Starlette JSON API and one HTML page.

Why not Gradio: Gradio 6 requires ``pillow<13`` while this project runs on Pillow 13, and
it would add about 30 MB and a dozen packages for one page. The paper's workflow needs
little more than forms, images and keyboard shortcuts, which a plain page does well, and
a plain page can be driven in a headless browser in tests. Starlette and uvicorn are the
optional ``inpaint`` extra.

The page (``static/annotate.html`` and ``annotate.js``) calls:

====================  =====================================================================
``GET  /api/task``    the photograph in hand, its keyword captions, objects, progress
``GET  /api/photo/N`` the photograph's JPEG (only the one in hand)
``POST /api/mask``    mask prompt, threshold, x/y enlargement -> overlay preview, coverage
``POST /api/inpaint`` inpainting prompt (seed, guidance, steps) -> candidates with seeds
``POST /api/save``    choice, rating, original and new caption (and objects) -> saved row
``POST /api/skip``    leave the photograph out
====================  =====================================================================

A refused edit answers 422 with the rule's message; other bad input 400. Model calls run
in a worker thread, one at a time, so the page stays responsive while candidates render.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
from importlib import resources
from typing import Any, Callable

from PIL import Image

from hf_hardneg.inpaint.rules import RuleViolation, read_number
from hf_hardneg.inpaint.session import AnnotationSession

__all__ = ["create_app", "require_web_framework", "serve"]

logger = logging.getLogger(__name__)
INSTALL_HINT = 'pip install "hf_hardneg[inpaint]"'


def require_web_framework() -> None:
    """Fail at once, before minutes of model loading, when the optional web framework is missing."""
    import importlib.util

    missing = [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"the annotation web app needs {' and '.join(missing)}: {INSTALL_HINT}")


def _data_url(image: Image.Image, quality: int = 90) -> str:
    """A JPEG preview as a data: URL (the saved files are PNGs written from the full images)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _task_view(session: AnnotationSession) -> dict[str, Any]:
    task = session.current()
    catalog = session.catalog
    view: dict[str, Any] = {
        "concept": session.concept,
        "annotator": session.annotator,
        "progress": session.progress(),
        "settings": {
            "num_candidates": session.settings.num_candidates,
            "guidance_scale": session.settings.guidance_scale,
            "num_inference_steps": session.settings.num_inference_steps,
        },
        "build_command": session.export.build_command(),
        "task": None,
    }
    if task is None:
        return view
    categories = {
        c["name"]: {"supercategory": c["supercategory"], "same": catalog.same_supercategory(c["name"])}
        for c in sorted(catalog.index.categories.values(), key=lambda c: c["name"])
    }
    view["coco_categories"] = categories
    view["task"] = {
        "image_id": task.photo.image_id,
        "file_name": task.photo.file_name,
        "width": task.photo.width,
        "height": task.photo.height,
        "photo_url": f"/api/photo/{task.photo.image_id}",
        "license": task.photo.license_name,
        "captions": session.captions(task),
        "categories": list(task.photo.categories),
    }
    return view


def create_app(session: AnnotationSession):
    """The Starlette app serving one annotation session."""
    require_web_framework()
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    static = resources.files("hf_hardneg.inpaint") / "static"
    page = (static / "annotate.html").read_text(encoding="utf-8")
    script = (static / "annotate.js").read_text(encoding="utf-8")
    lock = threading.Lock()  # the session and the models serve one request at a time

    async def call(request: Request, work: Callable[[dict[str, Any]], dict[str, Any]]) -> Response:
        """Run ``work(body)`` in a worker thread, one request at a time; errors become JSON messages."""
        body: Any = {}
        if request.method == "POST":
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return JSONResponse({"error": "the request body must be a JSON object"}, status_code=400)

        def locked() -> dict[str, Any]:
            with lock:
                return work(body)

        try:
            return JSONResponse(await run_in_threadpool(locked))
        except RuleViolation as err:
            return JSONResponse({"error": str(err), "reason": err.reason}, status_code=422)
        except ValueError as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        except Exception as err:  # the page must show something, and the terminal the traceback
            logger.exception("annotation request failed")
            return JSONResponse({"error": f"internal error ({type(err).__name__}: {err}); see the terminal"},
                                status_code=500)

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def javascript(request: Request) -> Response:
        return Response(script, media_type="text/javascript")

    async def photo(request: Request) -> Response:
        current = session.in_hand
        if current is None or current.photo.image_id != request.path_params["image_id"]:
            return JSONResponse({"error": "only the photograph in hand is served"}, status_code=404)
        return FileResponse(current.photo.path, media_type="image/jpeg")

    def task(body: dict[str, Any]) -> dict[str, Any]:
        return _task_view(session)

    def mask(body: dict[str, Any]) -> dict[str, Any]:
        made = session.make_mask(
            str(body.get("prompt") or ""), read_number(body, "threshold", float, 0.4),
            read_number(body, "dilate_x", int, 0), read_number(body, "dilate_y", int, 0),
            image_id=read_number(body, "image_id", int),
        )
        return {"overlay": _data_url(made.overlay(session.in_hand.image)), "coverage": made.coverage}

    def inpaint(body: dict[str, Any]) -> dict[str, Any]:
        made = session.inpaint(
            str(body.get("prompt") or ""), seed=read_number(body, "seed", int),
            guidance_scale=read_number(body, "guidance_scale", float),
            num_inference_steps=read_number(body, "num_inference_steps", int),
            image_id=read_number(body, "image_id", int),
        )
        return {"candidates": [{"index": c.index, "seed": c.seed, "image": _data_url(c.image)} for c in made]}

    def save(body: dict[str, Any]) -> dict[str, Any]:
        choice = read_number(body, "choice", int)
        if choice is None:
            raise ValueError("choose one of the candidates first (keys 1-3)")
        row = session.save(
            choice, str(body.get("quality") or ""), str(body.get("coco_caption") or ""),
            str(body.get("inpaint_caption") or ""), category=body.get("category") or None,
            replacement=body.get("replacement") or None, image_id=read_number(body, "image_id", int),
        )
        return {"saved": row, **_task_view(session)}

    def skip(body: dict[str, Any]) -> dict[str, Any]:
        session.skip(str(body.get("reason") or ""), image_id=read_number(body, "image_id", int))
        return _task_view(session)

    def api(work: Callable[[dict[str, Any]], dict[str, Any]]):
        async def endpoint(request: Request) -> Response:
            return await call(request, work)

        return endpoint

    routes = [
        Route("/", index),
        Route("/annotate.js", javascript),
        Route("/api/task", api(task)),
        Route("/api/photo/{image_id:int}", photo),
        Route("/api/mask", api(mask), methods=["POST"]),
        Route("/api/inpaint", api(inpaint), methods=["POST"]),
        Route("/api/save", api(save), methods=["POST"]),
        Route("/api/skip", api(skip), methods=["POST"]),
    ]
    return Starlette(routes=routes)


def serve(session: AnnotationSession, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Run the app until Ctrl+C (uvicorn). Bind to localhost: the page has no login."""
    require_web_framework()
    import uvicorn

    uvicorn.run(create_app(session), host=host, port=port, log_level="warning")
