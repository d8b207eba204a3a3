"""Persona narratives: a deterministic template always, the model's text when the adapter is on.

A narrative is enrichment for readers of the report, never an input to the simulation, so it can
fail without failing anything: every persona gets `template_narrative` at synthesis; with the model
adapter configured and a token allowance reserved by the orchestrator, `NarrativeWriter.enrich`
replaces it with the model's text persona by persona. The allowance is never planned past: before
each call the writer sets aside the call's worst case (estimated prompt + max_tokens) and skips the
persona when that does not fit; after it, the provider's reported counts replace the worst case.
The first provider failure stops further calls for the request (a provider that is down would only
burn the stage's deadline); failures and skips become `narratives:*` warnings of the response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from smvm.config import Settings
from smvm.v1 import idea_pb2, market_pb2, persona_service_pb2

from services.personas.llm_adapter import ChatCompletions, ProviderError, estimate_prompt_tokens

log = logging.getLogger(__name__)

# Seconds of the stage's deadline left unused for answering the orchestrator.
DEADLINE_MARGIN_S = 1.0
# The shortest completion worth asking for.
MIN_COMPLETION_TOKENS = 32
TEMPLATE_SOURCE = "template"


def template_narrative(persona: market_pb2.Persona) -> str:
    """A few sentences from the persona's own fields; the same persona always reads the same."""
    demo = persona.demographics
    who = ", ".join(x for x in (demo.get("occupation_label", ""), f"aged {demo['age_band']}" if demo.get("age_band")
                                else "", f"income band {demo['income_band']}" if demo.get("income_band") else "") if x)
    needs = "; ".join(persona.needs[:3]) or "no stated needs"
    wtp = persona.wtp
    top = sorted(persona.feature_importance.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
    cares = " and ".join(name.replace("_", " ") for name, _ in top) or "the basics"
    return (f"{persona.segment} ({who}), {persona.weight:.0%} of the reachable market. "
            f"Needs: {needs}. Cares most about {cares}; would pay about ${wtp.p50_usd:,.0f} "
            f"(80% between ${wtp.p10_usd:,.0f} and ${wtp.p90_usd:,.0f}), price sensitivity "
            f"{persona.price_sensitivity:.2f}. "
            f"Monthly churn once adopted: {persona.churn_monthly:.1%}.")


def narrative_prompt(persona: market_pb2.Persona, idea: idea_pb2.Idea | None) -> list[dict]:
    """Chat messages asking for one persona's narrative; the facts are the template's, so the model
    writes prose around numbers SMVM computed and is told not to invent others."""
    product = f"{idea.title}: {idea.description}".strip(": ") if idea is not None else "an unnamed product"
    return [
        {"role": "system", "content": "You write short, concrete customer persona narratives for a market "
                                      "validation report. Use only the facts given; invent no numbers. "
                                      "At most 90 words, plain prose, no lists."},
        {"role": "user", "content": f"Product: {product[:600]}\nPersona facts: {template_narrative(persona)}\n"
                                    "Write this persona's narrative: who they are, what they need from the "
                                    "product and what would stop them buying."},
    ]


@dataclass
class _Allowance:
    """Tokens the orchestrator reserved, less what calls have spent or set aside."""

    remaining: int

    def take(self, tokens: int) -> bool:
        if tokens > self.remaining:
            return False
        self.remaining -= tokens
        return True

    def give_back(self, tokens: int) -> None:
        self.remaining += tokens


class NarrativeWriter:
    """Writes persona narratives with the model within a token allowance (see the module docstring)."""

    def __init__(self, client: ChatCompletions, max_completion_tokens: int = 200, concurrency: int = 4):
        self.client = client
        self.max_completion_tokens = max_completion_tokens
        self.concurrency = concurrency

    @classmethod
    def from_settings(cls, settings: Settings) -> "NarrativeWriter | None":
        client = ChatCompletions.from_settings(settings)
        if client is None:
            return None
        return cls(client, settings.llm_max_completion_tokens, settings.llm_concurrency)

    async def enrich(self, response: persona_service_pb2.GeneratePersonasResponse,
                     idea: idea_pb2.Idea | None, allowance: int, time_left_s: float | None = None) -> None:
        """Replace template narratives with the model's, spending at most `allowance` tokens as
        planned; records usage in `response.narrative_usage` and problems in `response.warnings`."""
        usage = response.narrative_usage
        usage.model = self.client.model
        if allowance <= 0:
            usage.skipped = len(response.personas)
            response.warnings.append("narratives:not_reserved: the orchestrator reserved no model tokens; "
                                     "template narratives kept")
            return
        budget = _Allowance(int(allowance))
        ends = time.monotonic() + (time_left_s if time_left_s is not None else self.client.timeout_s) - DEADLINE_MARGIN_S
        gate = asyncio.Semaphore(self.concurrency)
        failures: list[str] = []
        skipped: list[str] = []

        async def write(persona: market_pb2.Persona) -> None:
            async with gate:
                left = ends - time.monotonic()
                if failures or left <= 0.05:
                    skipped.append(persona.id)
                    return
                messages = narrative_prompt(persona, idea)
                prompt_guess = estimate_prompt_tokens(messages)
                max_tokens = min(self.max_completion_tokens, budget.remaining - prompt_guess)
                if max_tokens < MIN_COMPLETION_TOKENS or not budget.take(prompt_guess + max_tokens):
                    skipped.append(persona.id)
                    return
                usage.calls += 1
                try:
                    completion = await self.client.complete(messages, max_tokens, timeout_s=left)
                except ProviderError as exc:
                    usage.failed_calls += 1
                    spent = sum(exc.charged)
                    usage.prompt_tokens += exc.charged[0]
                    usage.completion_tokens += exc.charged[1]
                    budget.give_back(prompt_guess + max_tokens - spent)
                    failures.append(f"{persona.id}: {exc}")
                    return
                usage.prompt_tokens += completion.prompt_tokens
                usage.completion_tokens += completion.completion_tokens
                budget.give_back(prompt_guess + max_tokens - completion.prompt_tokens - completion.completion_tokens)
                persona.narrative = completion.text
                persona.sources["narrative"] = f"model:{self.client.model}"

        await asyncio.gather(*(write(p) for p in response.personas))
        usage.skipped = len(skipped)
        if failures:
            log.warning("narrative provider failed: %s", failures[0])
            response.warnings.append(f"narratives:provider_error: {failures[0]}; {usage.failed_calls} call(s) failed, "
                                     f"{len(skipped)} persona(s) not sent; template narratives kept for them")
        elif skipped:
            response.warnings.append(f"narratives:allowance_exhausted: {len(skipped)} persona(s) kept the template "
                                     f"narrative (allowance {allowance} tokens or the stage deadline)")

    async def close(self) -> None:
        await self.client.close()
