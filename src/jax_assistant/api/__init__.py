"""The HTTP service of the orchestrator (``jax serve``): ``create_app()`` builds the FastAPI app."""

from jax_assistant.api.app import SERVICE_NAME, create_app

__all__ = ["SERVICE_NAME", "create_app"]
