"""The API maps each error family once: input -> 400/422, unavailable data -> 503, the service's own
configuration -> 500; and a request that cannot start leaves no run row."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from fastapi import FastAPI
from tests.api.helpers import serve

from jax_assistant.api import create_app
from jax_assistant.api.errors import install_error_handlers
from jax_assistant.config import Settings
from jax_assistant.domain.errors import ConfigError, DataError, InputError, JaxError, UnavailableError
from jax_assistant.risk.sizing import RiskInputError


async def test_bad_strategy_file_is_a_500_naming_it_and_stores_nothing(
    database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "strategies"
    folder.mkdir()
    (folder / "broken.json").write_text("{")
    async with serve(create_app(Settings(database_url=database_url, strategies_dir=folder))) as svc:
        resp = await svc.client.post("/process", json={"symbols": ["ACME.SIM"]})
        assert resp.status_code == 500, resp.text
        assert "broken.json" in resp.json()["error"]
        assert (await svc.client.get("/runs")).json() == []


async def test_unreadable_market_data_is_a_503_and_stores_nothing(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "bars.csv.gz"
    blob = gzip.compress(
        b"symbol,date,open,high,low,close,volume\n" + b"AAA,2020-01-02,1,2,0.5,1.5,9\n" * 2000
    )
    path.write_bytes(blob[: len(blob) // 2])
    settings = Settings(database_url=database_url, provider="csv", data_path=path)
    async with serve(create_app(settings)) as svc:
        resp = await svc.client.post("/process", json={"symbols": ["AAA"]})
        assert resp.status_code == 503, resp.text
        assert "bars.csv.gz" in resp.json()["error"]
        assert (await svc.client.get("/runs")).json() == []


async def test_unknown_stage_in_the_service_config_is_a_500(database_url: str) -> None:
    settings = Settings(database_url=database_url, stages={"persit": {"timeout_s": 3}})
    async with serve(create_app(settings)) as svc:
        resp = await svc.client.post("/process", json={"symbols": ["ACME.SIM"]})
        assert resp.status_code == 500, resp.text
        assert "stages.persit" in resp.json()["error"]
        assert (await svc.client.get("/runs")).json() == []


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (RiskInputError("entry", "must be finite"), 400),  # a subclass needs no handler of its own
        (InputError("bad", field="x"), 400),
        (DataError("no data"), 503),
        (UnavailableError("db down"), 503),
        (ConfigError("bad config"), 500),
        (JaxError("other"), 500),
    ],
)
async def test_each_family_maps_once(exc: JaxError, status: int) -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise exc

    async with serve(app) as svc:
        resp = await svc.client.get("/boom")
    assert resp.status_code == status
    assert str(exc) in resp.json()["error"]
