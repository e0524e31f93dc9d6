"""Issue 8 §7: the OpenAPI document is precise, and schemathesis finds no failure against it.

Schemathesis runs as its own process (its CLI) against a real uvicorn on loopback, with every check,
a fixed seed and a bounded number of examples per operation, so a failure reproduces.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from tests.api.helpers import Service, serve

from jax_assistant.api import create_app
from jax_assistant.config import Settings

SEED = 20261202
MAX_EXAMPLES = 12


async def test_every_route_documents_its_responses(service: Service) -> None:
    spec = (await service.client.get("/openapi.json")).json()
    assert spec["paths"], "no paths documented"
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            responses = op["responses"]
            ok = [code for code in responses if code.startswith("2")]
            assert ok, f"{method.upper()} {path}: no success response documented"
            for code in ok:
                content = responses[code].get("content", {})
                assert content, f"{method.upper()} {path} {code}: no body documented"
                for media in content.values():
                    assert media.get("schema") not in (None, {}), (
                        f"{method.upper()} {path} {code}: schema {{}}"
                    )
            errors = [code for code in responses if code[0] in "45"]
            assert errors, f"{method.upper()} {path}: no error status documented"
    events = spec["paths"]["/runs/{run_id}/events"]["get"]["responses"]["200"]["content"]
    assert list(events) == ["text/event-stream"]
    assert "X-Next-Cursor" in spec["paths"]["/runs"]["get"]["responses"]["200"]["headers"]


@pytest.mark.timeout(900)  # about 1 000 requests; minutes on a loaded 2-core machine
async def test_schemathesis_finds_no_failure(
    settings: Settings, api_headers: dict[str, str], tmp_path: Path
) -> None:
    async with serve(create_app(settings), headers=api_headers) as service:
        args = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(Path(__file__).with_name("schemathesis.toml")),
            "run",
            f"{service.server.url}/openapi.json",
            "--checks",
            "all",
            "--seed",
            str(SEED),
            "--max-examples",
            str(MAX_EXAMPLES),
            "--workers",
            "1",
            "--request-timeout",
            "70",
            "--no-color",
            "--report-dir",
            str(tmp_path / "report"),
        ]
        for name, value in api_headers.items():
            args += ["--header", f"{name}: {value}"]
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 600)
        text = out.decode(errors="replace")
        assert proc.returncode == 0, text[-6000:]
        assert "No issues found" in text or " passed" in text, text[-3000:]
