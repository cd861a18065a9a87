"""The dashboard: `/` and its static assets, served from files shipped in the package (usage_ledger/web/).

No build step and no credential here: the page asks for an ADMIN key and calls the JSON API from the browser. Assets
are read once per process, revalidated by ETag (so an upgrade is seen at once) and served with a strict CSP.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from fastapi import APIRouter, Request
from starlette.responses import Response

from .errors import not_found

router = APIRouter(include_in_schema=False)

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
          ".ico": "image/x-icon", ".md": "text/plain; charset=utf-8", ".txt": "text/plain; charset=utf-8"}
_NAME = re.compile(r"^(?:vendor/)?[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# Everything from this origin, nothing inline, no framing; blob: for the CSV download and the chart canvas' images.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
        "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": _CSP, "X-Frame-Options": "DENY"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@lru_cache(maxsize=64)
def _asset(name: str) -> Asset | None:
    """A file of usage_ledger/web by its relative name, or None; `name` has passed _NAME (no `..`, no `/x`)."""
    suffix = name[name.rfind("."):] if "." in name else ""
    if suffix not in _TYPES or name.endswith(".map"):
        return None
    node = resources.files("usage_ledger").joinpath("web", *name.split("/"))
    try:
        body = node.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return None
    return Asset(body, _TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _serve(request: Request, asset: Asset) -> Response:
    headers = {**_HEADERS, "ETag": asset.etag}
    if asset.etag in (t.strip() for t in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    body = b"" if request.method == "HEAD" else asset.body
    response = Response(body, media_type=asset.media_type, headers=headers)
    if request.method == "HEAD":
        response.headers["content-length"] = str(len(asset.body))
    return response


@router.api_route("/", methods=["GET", "HEAD"])
async def dashboard(request: Request) -> Response:
    asset = _asset("index.html")
    if asset is None:  # a broken install: say so rather than serve an empty page
        raise not_found()
    return _serve(request, asset)


@router.api_route("/assets/{name:path}", methods=["GET", "HEAD"])
async def asset(name: str, request: Request) -> Response:
    found = _asset(name) if _NAME.match(name) and ".." not in name else None
    if found is None:
        raise not_found()
    return _serve(request, found)
