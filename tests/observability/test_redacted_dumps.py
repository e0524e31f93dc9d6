"""``RedactedJson`` and ``redacted_dumps``: redaction done once, where a decision is built, with the
same result as ``redact`` whatever a strategy or risk rule put in the models."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel
from tests.storage.factories import make_trade

from jax_assistant.domain import ResearchBundle, ResearchProvenance, TradeRecord, TradeSetup
from jax_assistant.observability.redaction import REDACTED, RedactedJson, redact, redacted_dumps


def _models(trade: TradeRecord) -> dict[str, BaseModel]:
    return {"setup": trade.setup, "risk": trade.risk}


def _walked(trade: TradeRecord) -> Any:
    return redact({k: m.model_dump(mode="json", by_alias=True) for k, m in _models(trade).items()})


def _variants() -> dict[str, TradeRecord]:
    base = make_trade()
    setup, risk = base.setup, base.risk
    research = setup.research
    assert research is not None
    provenance = ResearchProvenance(status="ok", provider="dexter", tokens=1234, questions=["q"])
    return {
        "plain": base,
        "no research": base.model_copy(update={"setup": setup.model_copy(update={"research": None})}),
        # A field of a sensitive name in the schema: replaced whenever the model holding it is there.
        "provenance tokens": base.model_copy(
            update={"setup": setup.model_copy(update={"research_provenance": provenance})}
        ),
        # Keys of dict fields are data: a risk rule or research provider may name one like a secret.
        "risk metric key": base.model_copy(
            update={
                "risk": risk.model_copy(
                    update={
                        "constraints": risk.constraints.model_copy(
                            update={"risk_metrics": {"api_token": 1.0, "leverage": 2.0}}
                        )
                    }
                )
            }
        ),
        "research metric key": base.model_copy(
            update={
                "setup": setup.model_copy(
                    update={"research": research.model_copy(update={"metrics": {"broker_key": 3.0}})}
                )
            }
        ),
        # Free text a strategy wrote: credentials in it are replaced like anywhere else.
        "bearer in notes": base.model_copy(
            update={"setup": setup.model_copy(update={"notes": "called with Bearer abc.def"})}
        ),
        "api key in reason": base.model_copy(
            update={"setup": setup.model_copy(update={"reason": "key jaxk_0123456789ab_secret"})}
        ),
    }


@pytest.mark.parametrize("name", list(_variants()))
def test_redacted_dumps_is_what_redact_makes_of_the_dumps(name: str) -> None:
    trade = _variants()[name]
    got = redacted_dumps(_models(trade))
    assert isinstance(got, RedactedJson)
    assert got == _walked(trade)
    assert redact({"setups": [got]})["setups"][0] is got  # not walked again


def test_the_variants_do_redact_something() -> None:
    variants = _variants()
    assert _walked(variants["provenance tokens"])["setup"]["researchProvenance"]["tokens"] == REDACTED
    assert (
        _walked(variants["risk metric key"])["risk"]["constraints"]["risk_metrics"]["api_token"] == REDACTED
    )
    assert "Bearer" not in str(_walked(variants["bearer in notes"]))


class _PluginSetup(TradeSetup):
    """A plugin's subclass: its own fields are dumped with the setup's, so they are checked too."""

    broker_key: str = "k-123"


def test_a_subclass_field_of_a_sensitive_name_is_redacted() -> None:
    trade = make_trade()
    setup = _PluginSetup(**trade.setup.model_dump())
    got = redacted_dumps({"setup": setup, "risk": trade.risk})
    assert got["setup"]["brokerKey"] == REDACTED
    assert got == redact(
        {"setup": setup.model_dump(mode="json", by_alias=True), "risk": trade.risk.to_contract()}
    )


class _Loose(BaseModel):
    blob: dict[str, Any]
    items: list[dict[str, float]]


def test_a_schema_that_proves_nothing_is_walked() -> None:
    model = _Loose(blob={"password": "p", "deep": {"token": "t"}}, items=[{"secret": 1.0}])
    got = redacted_dumps({"loose": model})
    assert got == {
        "loose": {
            "blob": {"password": REDACTED, "deep": {"token": REDACTED}},
            "items": [{"secret": REDACTED}],
        }
    }


def test_redacted_json_redacts_what_it_is_made_of_and_refuses_writes() -> None:
    made = RedactedJson({"password": "p", "text": "Bearer x", "ok": [1, {"api_key": 2}]})
    assert made == {"password": REDACTED, "text": REDACTED, "ok": [1, {"api_key": REDACTED}]}
    writes: list[Callable[[], object]] = [
        lambda: made.__setitem__("secret", "s"),
        lambda: made.update(secret="s"),
        lambda: made.setdefault("secret", "s"),
        lambda: made.pop("ok"),
        made.clear,
        made.popitem,
    ]
    for write in writes:
        with pytest.raises(TypeError):
            write()
    assert copy.copy(made) is made
    deep = copy.deepcopy(made)
    assert deep == made and type(deep) is RedactedJson and deep["ok"] is not made["ok"]
    back = pickle.loads(pickle.dumps(made))
    assert back == made and type(back) is RedactedJson


def test_a_decision_of_built_in_models_is_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    from jax_assistant.observability import redaction

    walked: list[object] = []
    real = redaction._redact

    def spy(obj: Any, active: set[int]) -> Any:
        walked.append(obj)
        return real(obj, active)

    monkeypatch.setattr(redaction, "_redact", spy)
    for name in ("plain", "no research", "provenance tokens"):
        redacted_dumps(_models(_variants()[name]))
    assert walked == []
    redacted_dumps(_models(_variants()["bearer in notes"]))
    assert walked


class _PluginResearch(ResearchBundle):
    api_key: str = "k-456"


def test_a_nested_subclass_is_dumped_as_its_declared_model() -> None:
    # The schema plan is the declared field type's: pydantic dumps a nested subclass instance as that
    # type, so its own fields never reach the dump (if that changed, this equality would fail).
    trade = make_trade()
    setup = trade.setup.model_copy(update={"research": _PluginResearch(ticker="AAPL")})
    got = redacted_dumps({"setup": setup, "risk": trade.risk})
    assert got == redact(
        {"setup": setup.model_dump(mode="json", by_alias=True), "risk": trade.risk.to_contract()}
    )
    assert "k-456" not in str(got)


def test_a_bearer_credential_in_unusual_case_is_redacted_from_a_model_dump() -> None:
    trade = make_trade()
    setup = trade.setup.model_copy(update={"notes": "seen with BeArEr tok.secret-9 in a note"})
    out = redacted_dumps({"setup": setup})
    assert "tok.secret-9" not in str(dict(out)) and REDACTED in str(dict(out))


def _with_metrics(trade: TradeRecord, metrics: dict[str, float]) -> TradeRecord:
    risk = trade.risk
    constraints = risk.constraints.model_copy(update={"risk_metrics": metrics})
    return trade.model_copy(update={"risk": risk.model_copy(update={"constraints": constraints})})


def test_a_key_set_found_clean_once_does_not_hide_a_sensitive_key_later() -> None:
    trade = make_trade()
    clean = _with_metrics(trade, {"leverage": 1.0, "dollar_risk": 2.0})
    assert redacted_dumps(_models(clean)) == _walked(clean)  # its keys are now known clean
    again = redacted_dumps(_models(clean))
    assert again.canonical is not None  # not walked: the known key set passes as one lookup
    dirty = _with_metrics(trade, {"leverage": 1.0, "dollar_risk": 2.0, "secret_sauce": 3.0})
    got = redacted_dumps(_models(dirty))
    assert got["risk"]["constraints"]["risk_metrics"]["secret_sauce"] == REDACTED
    assert got == _walked(dirty)
