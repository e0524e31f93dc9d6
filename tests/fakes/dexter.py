"""A fake Dexter research service (``POST /tools``, ``GET /health``) with the documented shapes.

``dexter.research_company {ticker, questions[]}`` -> ``{"output": {ticker, summary, key_points[],
metrics{}, raw_markdown}}``; ``dexter.compare_companies {tickers[], focus}`` -> ``{"output":
{comparison_axis, items[{ticker, thesis, notes[]}]}}``; failures are ``{"error": "..."}``. Answers are
derived from the request, so a test can tell which call produced which bundle.
"""

from __future__ import annotations

from typing import Any

from tests.fakes._http import FakeServer


class FakeDexter(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.drop_from_batch: set[str] = set()  # tickers a compare answer leaves out

    def answer(self, path: str, body: Any) -> tuple[int, Any]:
        if path != "/tools":
            return 404, {"error": "not found"}
        tool, data = body.get("tool"), body.get("input") or {}
        if tool == "dexter.research_company":
            ticker = data["ticker"]
            questions = data.get("questions") or []
            return 200, {
                "output": {
                    "ticker": ticker,
                    "summary": f"Dexter on {ticker}: {len(questions)} question(s) researched.",
                    "key_points": [f"answer to: {q}" for q in questions],
                    "metrics": {"pe_ratio": 21.5, "revenue_growth_pct": 7.25},
                    "raw_markdown": f"# {ticker}\n\nresearched by the fake Dexter",
                }
            }
        if tool == "dexter.compare_companies":
            tickers = [t for t in data["tickers"] if t not in self.drop_from_batch]
            return 200, {
                "output": {
                    "comparison_axis": data.get("focus", ""),
                    "items": [
                        {"ticker": t, "thesis": f"{t} compared by the fake Dexter", "notes": [f"{t} note"]}
                        for t in tickers
                    ],
                }
            }
        return 400, {"error": "unknown tool"}

    def oversized(self, path: str, body: Any) -> Any:
        ticker = (body.get("input") or {}).get("ticker", "X")
        return {"output": {"ticker": ticker, "summary": "x" * self.oversize_bytes}}

    def tools_called(self) -> list[str]:
        return [r.body.get("tool") for r in self.requests]
