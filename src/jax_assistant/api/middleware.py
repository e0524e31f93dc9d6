"""Kept for imports of the old path: the middleware lives in ``service/correlation.py`` (every service
uses it, and the memory service must not depend on ``api``)."""

from __future__ import annotations

from jax_assistant.service.correlation import CorrelationIdMiddleware

__all__ = ["CorrelationIdMiddleware"]
