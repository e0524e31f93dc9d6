"""jax-ingest: pushed observation batches (Dexter, news and earnings alerts) normalised, stored once,
remembered when significant and processed like detected events (docs/ingest.md).

The wire models are here; the core is ``ingest.service.IngestService`` (imported by name, so settings
can import this package without loading storage).
"""

from __future__ import annotations

from jax_assistant.ingest.models import (
    SIGNAL_TYPES,
    TYPE_ALIASES,
    IngestConfig,
    IngestResult,
    ItemError,
    ItemOutcome,
    Observation,
    ObservationBatch,
    Processing,
    bank_for,
    normalise_type,
)

__all__ = [
    "SIGNAL_TYPES",
    "TYPE_ALIASES",
    "IngestConfig",
    "IngestResult",
    "ItemError",
    "ItemOutcome",
    "Observation",
    "ObservationBatch",
    "Processing",
    "bank_for",
    "normalise_type",
]
