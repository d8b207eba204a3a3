"""The optional model adapter: one chat completion from an OpenAI-compatible HTTP API.

Off unless `SMVM_LLM_BASE_URL` and `SMVM_LLM_MODEL` are set (`Settings.llm_enabled`). It speaks the
de facto standard `POST {base}/chat/completions` (OpenAI, Azure's compatible endpoint, vLLM, Ollama,
llama.cpp's server, ...) and returns the text with the provider's own token counts
(`usage.prompt_tokens` / `usage.completion_tokens`): those counts, not an estimate, are what the
ledger commits. A provider error is a `ProviderError` carrying whatever usage the provider still
reported (a 2xx answer without `usage` cannot be metered, so it counts as failed and charges the
call's worst case). One attempt per call: a retry would spend tokens twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import httpx

from smvm.config import Settings


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


class ProviderError(Exception):
    """The provider failed or answered something unusable; `charged` is the tokens to meter anyway."""

    def __init__(self, message: str, charged: tuple[int, int] = (0, 0)):
        super().__init__(message)
        self.charged = charged  # (prompt_tokens, completion_tokens)


def _count(usage: dict, name: str) -> int:
    value = usage.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"usage.{name} must be a non-negative integer, got {value!r}")
    return value


class ChatCompletions:
    """An httpx client for one provider and model; `complete` is safe to call concurrently."""

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout_s: float = 20.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", headers=headers, transport=transport,
                                       timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)))

    @classmethod
    def from_settings(cls, settings: Settings) -> "ChatCompletions | None":
        if not settings.llm_enabled():
            return None
        return cls(settings.llm_base_url, settings.llm_model, settings.llm_api_key, settings.llm_timeout_s)

    async def complete(self, messages: list[dict], max_tokens: int, timeout_s: float | None = None) -> Completion:
        """One completion of at most `max_tokens`, within `timeout_s` (default the client's)."""
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "n": 1, "temperature": 0.7}
        timeout = httpx.Timeout(min(timeout_s or self.timeout_s, self.timeout_s), connect=min(5.0, self.timeout_s))
        try:
            answer = await self._http.post("chat/completions", json=body, timeout=timeout)
        except httpx.TimeoutException:
            raise ProviderError(f"no answer within {timeout.read:g}s") from None
        except httpx.HTTPError as exc:
            raise ProviderError(f"{type(exc).__name__}: {exc}"[:300]) from None
        try:
            data = answer.json()
        except ValueError:
            data = None
        usage = data.get("usage") if isinstance(data, dict) else None
        if answer.status_code >= 300:
            charged = _charged(usage)
            detail = data.get("error", {}).get("message", "") if isinstance(data, dict) and isinstance(
                data.get("error"), dict) else answer.text[:200]
            raise ProviderError(f"HTTP {answer.status_code}: {detail}".rstrip(": "), charged)
        if not isinstance(usage, dict):
            raise ProviderError("the answer carries no usage, so it cannot be metered",
                                (estimate_prompt_tokens(messages), max_tokens))
        try:
            prompt_tokens, completion_tokens = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
        except ValueError as exc:
            raise ProviderError(str(exc), (estimate_prompt_tokens(messages), max_tokens)) from None
        try:
            text = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            text = None
        if not isinstance(text, str) or not text.strip():
            raise ProviderError("the answer has no choices[0].message.content", (prompt_tokens, completion_tokens))
        return Completion(text.strip(), prompt_tokens, completion_tokens)

    async def close(self) -> None:
        await self._http.aclose()


def _charged(usage) -> tuple[int, int]:
    """The counts an error answer still reports (0 when it reports none)."""
    if not isinstance(usage, dict):
        return 0, 0
    try:
        return _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
    except ValueError:
        return 0, 0


def estimate_prompt_tokens(messages: list[dict]) -> int:
    """A deliberately high guess of a prompt's tokens before sending it (BPE tokenisers average about
    4 bytes of English per token; 3 leaves room for numbers and names), plus per-message framing."""
    return sum(math.ceil(len(str(m.get("content", "")).encode()) / 3) + 4 for m in messages) + 3
