"""create_provider: the factory the CLI and the API use."""

from __future__ import annotations

from pathlib import Path

import pytest

from jax_assistant.marketdata import (
    CsvProvider,
    DataSourceError,
    MarketDataProvider,
    SampleProvider,
    create_provider,
)


def test_sample() -> None:
    p = create_provider("sample")
    assert isinstance(p, SampleProvider) and isinstance(p, MarketDataProvider)
    assert p.simulated is True
    assert isinstance(create_provider(" Sample "), SampleProvider)


def test_csv(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text(
        "symbol,date,open,high,low,close,volume\nAAA,2021-03-01,1,2,0.5,1.5,10\nAAA,2021-03-02,1,2,0.5,1.5,10\n"
    )
    p = create_provider("csv", f, symbols=["AAA"])
    assert isinstance(p, CsvProvider) and isinstance(p, MarketDataProvider)
    assert p.simulated is False
    assert p.symbols() == ["AAA"]


def test_csv_without_path_is_a_clear_error() -> None:
    with pytest.raises(DataSourceError, match="needs a data path"):
        create_provider("csv")


def test_unknown_kind_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"'yahoo'.*sample, csv"):
        create_provider("yahoo")
