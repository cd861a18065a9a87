"""Liveness, readiness and metrics: never behind a credential."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .deps import ServicesDep
from .errors import json_response
from .metrics import REGISTRY

router = APIRouter(tags=["Operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz", summary="Readiness: the store answers", responses={503: {"description": "store unreachable"}})
async def readyz(svc: ServicesDep) -> Response:
    try:
        await run_in_threadpool(svc.store.check)
    except Exception:  # any failure of the store means not ready; the reason goes to the log, not the prober
        return json_response({"status": "unavailable"}, 503)
    return json_response({"status": "ok"})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
