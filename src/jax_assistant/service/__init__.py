"""What makes an HTTP service safe to expose, shared by every service of the project (see docs/api.md,
"Securing a service"): API keys with scopes, a trusted-host check, request limits, admission control
and a cheap, redacted access log.

``harden(app, config, key_store=...)`` applies all of it to any FastAPI app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI

from jax_assistant.config import ApiConfig
from jax_assistant.service.admission import Admission, AdmissionRejectedError, Ticket
from jax_assistant.service.auth import (
    ApiKey,
    ApiKeyStore,
    ApiScope,
    Authenticator,
    AuthMiddleware,
    KeyStore,
    ScopeResolver,
)
from jax_assistant.service.hosts import TrustedHostMiddleware
from jax_assistant.service.limits import LimitsMiddleware, RequestLimits
from jax_assistant.service.logging import AccessLogMiddleware

# Probes and the API description answer without a key (a load balancer has none).
PUBLIC_PATHS = frozenset({"/health", "/ready", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def scope_resolver(
    config: ApiConfig, *, public: Iterable[str] = PUBLIC_PATHS, admin_prefixes: Iterable[str] = ()
) -> ScopeResolver:
    """Mutating methods need ``write``; reads need ``read`` only with ``read_auth``; paths under
    ``admin_prefixes`` need ``admin`` whatever the method; ``public`` paths need nothing."""
    open_paths = frozenset(public)
    admin = tuple(admin_prefixes)

    def needs(method: str, path: str) -> ApiScope | None:
        if path in open_paths:
            return None
        if admin and path.startswith(admin):
            return ApiScope.ADMIN
        if method in _READ_METHODS:
            return ApiScope.READ if config.read_auth else None
        return ApiScope.WRITE

    return needs


def request_limits(config: ApiConfig) -> RequestLimits:
    return RequestLimits(
        max_body_bytes=config.max_body_bytes,
        max_json_depth=config.max_json_depth,
        max_list_length=config.max_list_length,
        max_string_length=config.max_string_length,
        body_timeout_s=config.body_timeout_s,
    )


def harden(
    app: FastAPI,
    config: ApiConfig,
    *,
    key_store: Callable[[], KeyStore],
    needs: ScopeResolver | None = None,
) -> None:
    """Add, innermost first: request limits, auth (unless ``config.auth == "off"``), the trusted-host
    check and (with ``config.access_log``) the access log; declare the bearer scheme in the OpenAPI.

    Call it before adding middleware that must stay outermost (e.g. correlation ids). ``key_store`` is
    called per lookup, so it may return a store that only exists once the app's lifespan has run.
    """
    resolver = needs or scope_resolver(config)
    app.add_middleware(LimitsMiddleware, limits=request_limits(config))
    if config.auth == "required":
        app.add_middleware(AuthMiddleware, authenticator=Authenticator(key_store), needs=resolver)
    app.add_middleware(TrustedHostMiddleware, allowed=config.trusted_hosts)
    if config.access_log:
        app.add_middleware(AccessLogMiddleware)
    app.state.scope_for = resolver if config.auth == "required" else (lambda _m, _p: None)
    _document_security(app)


def _document_security(app: FastAPI) -> None:
    """``securitySchemes`` plus, on every operation that needs a key, its ``security`` and 401/403."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearerAuth"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "an API key from `jax keys create` (also accepted as X-API-Key)",
        }
        for path, operations in schema.get("paths", {}).items():
            for method, op in operations.items():
                needed = app.state.scope_for(method.upper(), path)
                if needed is None:
                    continue
                op["security"] = [{"bearerAuth": []}]
                op["description"] = (
                    op.get("description", "") + f"\n\nNeeds a key with scope `{needed}`."
                ).strip()
                responses = op.setdefault("responses", {})
                responses.setdefault("401", {"description": "no valid API key"})
                responses.setdefault("403", {"description": f"the key lacks the `{needed}` scope"})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = [
    "PUBLIC_PATHS",
    "Admission",
    "AdmissionRejectedError",
    "ApiKey",
    "ApiKeyStore",
    "ApiScope",
    "KeyStore",
    "RequestLimits",
    "Ticket",
    "harden",
    "request_limits",
    "scope_resolver",
]
