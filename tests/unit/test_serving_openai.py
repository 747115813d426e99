"""The OpenAI-compatible target's contract: health from ``GET /v1/models``, smoke and latency through
``POST /v1/chat/completions``, credentials as a bearer token that never shows in an error.

No OpenAI-compatible server installs here (vLLM and llama.cpp need model weights from outside PyPI), so
these tests run a small HTTP server that answers in the shapes the OpenAI API reference documents
(and Blablador returns); the target is exercised against a real server in a later step.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from operators.serving.checks import CheckFailed
from operators.serving.http import Credentials, InferenceError
from operators.serving.openai import OpenAIClient, parse_chat_answer
from operators.serving.rollout import RolloutFailed, roll_out
from operators.serving.targets import OpenAITarget, target_from_connection
from operators.spec import Latency, Smoke

TOKEN = "sk-test-7d1f0c9e"
MODELS = {"object": "list", "data": [{"id": "alias-fast", "object": "model", "created": 1, "owned_by": "jsc"},
                                     {"id": "helper-v3", "object": "model", "created": 1, "owned_by": "jsc"}]}


def completion(model: str, content: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}


class OpenAIShapedServer:
    """Answers like an OpenAI-compatible service; ``reply`` sets the chat answer, requests are recorded."""

    def __init__(self, token: str | None = TOKEN) -> None:
        self.token, self.reply, self.requests = token, "OK, ready.", []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append((self.command, self.path, self.headers.get("Authorization"),
                                       json.loads(body) if body else None))
                if outer.token and self.headers.get("Authorization") != f"Bearer {outer.token}":
                    sent = self.headers.get("Authorization", "")
                    return self._send(401, {"error": {"message": f"invalid api key {sent}", "type": "auth"}})
                if self.command == "GET" and self.path == "/v1/models":
                    return self._send(200, MODELS)
                if self.command == "POST" and self.path == "/v1/chat/completions":
                    model = json.loads(body)["model"]
                    if model not in {entry["id"] for entry in MODELS["data"]}:
                        return self._send(404, {"error": {"message": f"model {model} does not exist"}})
                    if outer.reply == "<html>":
                        self.send_response(200)
                        self.end_headers()
                        self.wfile.write(b"<html>gateway timeout</html>")
                        return None
                    return self._send(200, completion(model, outer.reply) if not isinstance(outer.reply, dict)
                                      else outer.reply)
                return self._send(404, {"error": {"message": "not found"}})

            def _send(self, status: int, body: dict) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(body).encode())

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def server() -> Iterator[OpenAIShapedServer]:
    running = OpenAIShapedServer()
    yield running
    running.server.shutdown()


def target(server: OpenAIShapedServer, token: str | None = TOKEN, model_id: str = "{model}-v{version}") -> OpenAITarget:
    return OpenAITarget(OpenAIClient(server.url, Credentials(token=token), timeout_s=5), model_id)


def test_health_is_the_model_id_listed_by_v1_models(server):
    assert target(server).ready("helper", "3")
    assert not target(server).ready("helper", "4")
    assert server.requests[0][:3] == ("GET", "/v1/models", f"Bearer {TOKEN}")


def test_smoke_sends_one_deterministic_chat_message_and_checks_the_reply(server):
    evidence = target(server).smoke("helper", "3", Smoke(prompt="Say OK", expect_pattern=r"^OK\b"))
    assert evidence == {"reply": "OK, ready.", "finish_reason": "stop"}
    body = server.requests[-1][3]
    assert body["model"] == "helper-v3" and body["messages"] == [{"role": "user", "content": "Say OK"}]
    assert body["temperature"] == 0 and body["stream"] is False and body["max_tokens"] > 0


def test_a_reply_that_misses_the_pattern_or_is_empty_fails_the_smoke_test(server):
    with pytest.raises(CheckFailed, match=r"does not match serving\.smoke\.expect_pattern"):
        target(server).smoke("helper", "3", Smoke(prompt="Say OK", expect_pattern=r"^READY$"))
    server.reply = "   "
    with pytest.raises(CheckFailed, match="empty message"):
        target(server).smoke("helper", "3", Smoke(prompt="Say OK"))


@pytest.mark.parametrize(("answer", "named"), [
    ({"object": "chat.completion", "choices": []}, "no choices"),
    ({"choices": [{"message": {"role": "assistant"}}]}, "choices\\[0\\].message.content"),
    ({"error": {"message": "overloaded"}}, "answered an error: .*overloaded"),
])
def test_an_answer_off_the_documented_shape_names_what_is_missing(answer, named):
    with pytest.raises(InferenceError, match=named):
        parse_chat_answer(answer)


def test_a_proxy_page_instead_of_json_is_reported_as_such(server):
    server.reply = "<html>"
    with pytest.raises(InferenceError, match="not JSON"):
        target(server).smoke("helper", "3", Smoke(prompt="Say OK"))


def test_a_refused_token_is_reported_without_the_token(server):
    wrong = "sk-wrong-55aa"
    with pytest.raises(InferenceError) as raised:
        target(server, token=wrong).ready("helper", "3")
    assert "credentials were refused" in str(raised.value) and "HTTP 401" in str(raised.value)
    assert wrong not in str(raised.value), "the server echoed the token; the error must not"


def test_a_rollout_against_the_openai_target_checks_and_measures_then_only_the_alias_can_move(server):
    report = roll_out(target(server), "helper", "3", None, Smoke(prompt="Say OK", expect_pattern="OK"),
                      Latency(requests=20, p99_ms=2000), say=lambda _line: None)
    assert set(report.seconds) == {"load", "ready", "smoke", "latency", "default"}
    assert report.latency["requests"] == 20 and report.latency["p99_ms"] <= 2000
    chats = [request for request in server.requests if request[1] == "/v1/chat/completions"]
    assert len(chats) == 1 + 1 + 20  # smoke, latency warm-up, 20 measured


def test_a_failed_smoke_test_fails_the_rollout_with_the_step_and_reason(server):
    server.reply = "I cannot help with that."
    with pytest.raises(RolloutFailed) as raised:
        roll_out(target(server), "helper", "3", None, Smoke(prompt="Say OK", expect_pattern="^OK"),
                 Latency(requests=10, p99_ms=2000), say=lambda _line: None)
    assert raised.value.step == "smoke" and "expect_pattern" in raised.value.reason
    assert "failed at smoke" in str(raised.value)


def test_a_latency_above_the_limit_fails_the_rollout(server):
    with pytest.raises(RolloutFailed) as raised:
        roll_out(target(server), "helper", "3", None, Smoke(prompt="Say OK"),
                 Latency(requests=10, p99_ms=0.0001), say=lambda _line: None)
    assert raised.value.step == "latency" and "p99 latency" in raised.value.reason


def test_a_model_id_the_endpoint_does_not_serve_never_gets_ready(server):
    with pytest.raises(RolloutFailed) as raised:
        roll_out(target(server), "helper", "9", None, Smoke(prompt="Say OK"), Latency(requests=10),
                 ready_timeout_s=0.5, say=lambda _line: None)
    assert raised.value.step == "ready" and "helper version 9 not ready" in raised.value.reason


def test_the_connection_gives_url_token_and_model_id_template(server):
    built = target_from_connection("openai", "127.0.0.1", server.server.server_address[1], "http", None, TOKEN,
                                   {"model_id": "{model}-v{version}"})
    assert built.kind == "openai" and built.ready("helper", "3")
    with pytest.raises(ValueError, match="allowed: v2, openai"):
        target_from_connection("kserve", "h", 1, "http", None, None, {})
    with pytest.raises(ValueError, match="model_repository"):
        target_from_connection("v2", "h", 1, "http", None, None, {})


def test_basic_credentials_and_their_absence():
    assert Credentials(login="u", password="p").headers() == {"Authorization": "Basic dTpw"}
    assert Credentials().headers() == {}
    assert TOKEN not in repr(Credentials(token=TOKEN))
