"""Every error the API returns is JSON ``{"error": message}`` (plus ``details`` for validation errors).

Each family of :mod:`jax_assistant.domain.errors` is mapped once, here: ``InputError`` -> 400 (invalid
stage overrides with ``details`` too), ``DataError`` and ``UnavailableError`` -> 503 (the request
was fine; the data source or a dependency is not), ``ConfigError`` -> 500 (the service's own
configuration is wrong), any other ``JaxError`` -> 500. A subclass needs no handler of its own, except
``AdmissionRejectedError`` (a 429 or 503 with ``Retry-After``). Auth (401/403), host (421) and limit
(408/413/422) refusals are answered by ``service/`` middleware before a route runs, in the same shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from jax_assistant.api.runs import InvalidOverrideError
from jax_assistant.domain.errors import ConfigError, DataError, InputError, JaxError, UnavailableError
from jax_assistant.service.admission import AdmissionRejectedError

_LOCATIONS = ("body", "query", "path", "header", "cookie")


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, **extra})


def _field(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in _LOCATIONS:
        where, parts = parts[0], parts[1:]
        if not parts:
            return "body" if where == "body" else where
    return ".".join(parts)


def validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "field": _field(tuple(e.get("loc", ()))),
            "in": str(e["loc"][0]) if e.get("loc") and e["loc"][0] in _LOCATIONS else "body",
            "message": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = validation_details([dict(e) for e in exc.errors()])
    for d in details:
        if d["field"] == "body" and d["type"] != "json_invalid":
            # FastAPI parses JSON only under a JSON content type; anything else arrives as a non-object.
            d["message"] += " (send a JSON object with Content-Type: application/json)"
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "invalid request"
    return error_response(422, summary, details=details)


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        status_code=exc.status_code, content={"error": str(exc.detail)}, headers=dict(exc.headers or {})
    )


async def _input_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputError)
    extra = {"field": exc.field} if exc.field else {}
    return error_response(400, str(exc), **extra)


async def _invalid_override(_: Request, exc: Exception) -> JSONResponse:
    # 400, not 422: the body matches its schema (stageOverrides is an open object there, as its keys
    # and policies depend on the configured pipeline); what it names does not exist or does not apply.
    return error_response(
        400,
        str(exc),
        field="stageOverrides",
        details=[{"field": "stageOverrides", "in": "body", "message": str(exc)}],
    )


async def _data_error(_: Request, exc: Exception) -> JSONResponse:
    # The request was fine; the configured data source is not (missing file, unreadable csv).
    return error_response(503, f"market data unavailable: {exc}")


async def _busy(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AdmissionRejectedError)
    return JSONResponse(
        status_code=exc.status,
        content={"error": str(exc), "retryAfterS": exc.retry_after_s},
        headers={"Retry-After": str(exc.retry_after_s)},
    )


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    return error_response(503, f"unavailable: {exc}")


async def _config_error(_: Request, exc: Exception) -> JSONResponse:
    return error_response(500, f"service configuration: {exc}")


async def _jax_error(_: Request, exc: Exception) -> JSONResponse:
    return error_response(500, str(exc))


def install_error_handlers(app: FastAPI) -> None:
    """Starlette picks the handler of the nearest class in the exception's MRO, so each family (and
    the one special case, InvalidOverrideError) is registered once and covers every subclass."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(InvalidOverrideError, _invalid_override)
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(AdmissionRejectedError, _busy)
    app.add_exception_handler(UnavailableError, _unavailable)
    app.add_exception_handler(ConfigError, _config_error)
    app.add_exception_handler(JaxError, _jax_error)
