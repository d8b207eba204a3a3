"""An OpenAI-compatible chat-completions provider double, served by uvicorn on a loopback port.

It answers `POST /v1/chat/completions` like the real API (choices[0].message.content and `usage`
with prompt_tokens / completion_tokens / total_tokens), counting one token per whitespace-separated
word so that tests know the exact counts it reported; the reply never exceeds `max_tokens`. A prompt
containing one of the markers below plays a provider failure. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from smvm.launcher import free_port

DOWN = "PROVIDER-DOWN"  # -> 503 with an OpenAI-style error body
NO_USAGE = "NO-USAGE"  # -> 200 without `usage`
SLOW = "PROVIDER-SLOW"  # -> answers after `slow_s`


@dataclass
class ProviderState:
    api_key: str
    calls: list[dict] = field(default_factory=list)  # {"body", "authorization", "status", "usage"}
    slow_s: float = 5.0

    def reported(self, marker: str = "") -> tuple[int, int]:
        """(prompt, completion) tokens reported in successful answers to prompts containing `marker`."""
        hits = [c["usage"] for c in self.calls if c["usage"] and marker in _prompt(c["body"])]
        return sum(u["prompt_tokens"] for u in hits), sum(u["completion_tokens"] for u in hits)

    def calls_about(self, marker: str) -> list[dict]:
        return [c for c in self.calls if marker in _prompt(c["body"])]


def _prompt(body: dict) -> str:
    return "\n".join(str(m.get("content", "")) for m in body.get("messages", []))


def build_app(state: ProviderState) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await request.json()
        call = {"body": body, "authorization": request.headers.get("authorization", ""), "status": 200, "usage": None}
        state.calls.append(call)
        if call["authorization"] != f"Bearer {state.api_key}":
            call["status"] = 401
            return JSONResponse({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}},
                                status_code=401)
        prompt = _prompt(body)
        if DOWN in prompt:
            call["status"] = 503
            return JSONResponse({"error": {"message": "The server is overloaded", "type": "server_error"}},
                                status_code=503)
        if SLOW in prompt:
            await asyncio.sleep(state.slow_s)
        facts = prompt.split("Persona facts:", 1)[-1].split()
        words = (["This", "persona"] + facts)[: int(body.get("max_tokens", 16))]
        answer = {"id": f"chatcmpl-{len(state.calls)}", "object": "chat.completion", "created": int(time.time()),
                  "model": body.get("model", ""),
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words)},
                               "finish_reason": "stop"}]}
        if NO_USAGE not in prompt:
            usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(words)}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            answer["usage"] = call["usage"] = usage
        return answer

    return app


class OpenAIDouble:
    """The provider on 127.0.0.1:<port> in a background thread."""

    def __init__(self, api_key: str = "sk-test-" + "k" * 24):
        self.state = ProviderState(api_key)
        self.port = free_port()
        self._server = uvicorn.Server(uvicorn.Config(build_app(self.state), host="127.0.0.1", port=self.port,
                                                     log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, name="openai-double", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "OpenAIDouble":
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("OpenAI double did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(20)
