"""`python -m jax_assistant` runs the CLI."""

from jax_assistant.cli import app

app(prog_name="jax")
