"""A fake OpenAI-compatible chat endpoint (``POST /v1/chat/completions``) with the documented shapes.

A completion is ``{id, object: "chat.completion", created, model, choices[{index, message{role,
content}, finish_reason}], usage{prompt_tokens, completion_tokens, total_tokens}}``; errors are
``{"error": {"message", "type", "code"}}``. Token counts per answer are settable so budget tests can
predict spend exactly.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.fakes._http import FakeServer, Reply


class FakeOpenAI(FakeServer):
    def __init__(self, *, prompt_tokens: int | None = None, completion_tokens: int = 100) -> None:
        super().__init__()
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens

    def answer(self, path: str, body: Any) -> tuple[int, Any]:
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": "not found", "type": "invalid_request_error", "code": None}}
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        # Like a real tokenizer, about 4 characters a token; the completion never exceeds max_tokens.
        prompt = self.prompt_tokens
        if prompt is None:
            prompt = sum(len(m["content"]) for m in body["messages"]) // 4
        completion = min(self.completion_tokens, int(body.get("max_tokens") or self.completion_tokens))
        ticker = user.split("\n", 1)[0].removeprefix("Ticker: ").strip()
        content = json.dumps(
            {"summary": f"LLM view of {ticker}.", "key_points": [f"{ticker}: risks are priced in"]}
        )
        return 200, {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    def error_reply(self, status: int, message: str) -> Reply:
        kind = (
            "rate_limit_error"
            if status == 429
            else "server_error"
            if status >= 500
            else "invalid_request_error"
        )
        return Reply(status, json.dumps({"error": {"message": message, "type": kind, "code": None}}).encode())

    def oversized(self, path: str, body: Any) -> Any:
        return {"choices": [{"message": {"role": "assistant", "content": "x" * self.oversize_bytes}}]}


class FakeReflectionLLM(FakeOpenAI):
    """The same chat endpoint answering the learning loop's reflection prompt.

    It reads the belief ids out of the prompt (lines ``<id> | <type> | ...``) and proposes one insight
    per ``answers`` entry citing the first ``cite`` ids. ``mode`` bends the answer the way a real model
    can go wrong: ``unknown`` cites an id it was never shown, ``overconfident`` says 1.5, ``prose`` drops
    the JSON, ``fenced`` wraps the JSON in a Markdown fence (which is accepted).
    """

    def __init__(
        self, *, answers: int = 2, cite: int = 2, confidence: float = 0.99, mode: str = "ok"
    ) -> None:
        super().__init__()
        self.answers = answers
        self.cite = cite
        self.confidence = confidence
        self.mode = mode

    def answer(self, path: str, body: Any) -> tuple[int, Any]:
        status, out = super().answer(path, body)
        if status != 200:
            return status, out
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        ids = [
            line.split(" | ", 1)[0]
            for line in user.splitlines()
            if " | " in line and line.startswith("belief_")
        ]
        cited = ids[: self.cite] + (["belief_invented"] if self.mode == "unknown" else [])
        confidence = 1.5 if self.mode == "overconfident" else self.confidence
        beliefs = [
            {
                "belief_type": "llm_insight",
                "summary": f"Pattern {n} across {len(cited)} track records.",
                "evidence_ids": cited,
                "confidence": confidence,
            }
            for n in range(self.answers)
        ]
        content = json.dumps({"beliefs": beliefs})
        if self.mode == "prose":
            content = "Breakouts look weak lately; I would trust them less."
        elif self.mode == "fenced":
            content = f"```json\n{content}\n```"
        out["choices"][0]["message"]["content"] = content
        return 200, out
