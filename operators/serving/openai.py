"""The OpenAI-compatible API as LLM services at the factories speak it (JSC's Blablador, vLLM, TGI).

Only what a rollout needs: which models the endpoint serves (``GET /v1/models``) and one chat
completion (``POST /v1/chat/completions``). Answers are checked against the shape the API documents,
so a proxy's HTML error page or a half-compatible server fails with a message saying what was missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from operators.serving.http import HttpJson, InferenceError


@dataclass(frozen=True)
class ChatAnswer:
    model: str
    content: str
    finish_reason: str | None
    completion_tokens: int | None


class OpenAIClient(HttpJson):
    def model_ids(self) -> list[str]:
        answer = self.call("GET", "/v1/models")
        entries = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("id"), str)
                                                    for e in entries):
            raise InferenceError(f"GET /v1/models: expected {{'data': [{{'id': ...}}, ...]}}, got {str(answer)[:200]}")
        return [entry["id"] for entry in entries]

    def chat(self, model: str, prompt: str, max_tokens: int = 16) -> ChatAnswer:
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                "temperature": 0, "stream": False}
        answer = self.call("POST", "/v1/chat/completions", body)
        return parse_chat_answer(answer)


def parse_chat_answer(answer: Any) -> ChatAnswer:
    """The first choice of a chat completion; an error names what the answer lacked."""
    where = "POST /v1/chat/completions"
    if not isinstance(answer, dict):
        raise InferenceError(f"{where}: expected a JSON object, got {str(answer)[:200]}")
    if "error" in answer:
        raise InferenceError(f"{where}: the server answered an error: {str(answer['error'])[:300]}")
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        raise InferenceError(f"{where}: the answer has no choices: {str(answer)[:200]}")
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise InferenceError(f"{where}: choices[0].message.content is missing or not text: {str(choices[0])[:200]}")
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    return ChatAnswer(model=str(answer.get("model", "")), content=content,
                      finish_reason=choices[0].get("finish_reason"),
                      completion_tokens=usage.get("completion_tokens"))
