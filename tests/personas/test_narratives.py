"""Persona narratives: the deterministic template, and the model adapter against an OpenAI-compatible
double on loopback (metered from the provider's counts, never planned past its allowance, a provider
failure keeping the template with a warning)."""

from __future__ import annotations

import pytest
from openai_double import DOWN, NO_USAGE, SLOW, OpenAIDouble

from smvm.config import Settings
from smvm.v1 import idea_pb2, persona_service_pb2 as pb
from services.personas.llm_adapter import ChatCompletions, estimate_prompt_tokens
from services.personas.narratives import NarrativeWriter, narrative_prompt, template_narrative
from services.personas.synthesis import generate_personas

MODEL = "double-model"


def personas(count: int = 5, seed: int = 11) -> pb.GeneratePersonasResponse:
    return generate_personas(pb.GeneratePersonasRequest(count=count, seed=seed))


def writer(provider: OpenAIDouble, *, key: str | None = None, timeout_s: float = 10.0, max_completion: int = 60,
           concurrency: int = 4) -> NarrativeWriter:
    client = ChatCompletions(provider.base_url, MODEL, provider.state.api_key if key is None else key, timeout_s)
    return NarrativeWriter(client, max_completion, concurrency)


def idea(title: str) -> idea_pb2.Idea:
    return idea_pb2.Idea(title=title, description="budgeting app for freelancers")


def test_the_template_states_the_personas_own_figures_and_is_deterministic():
    first, again = personas(seed=3), personas(seed=3)
    assert first.SerializeToString(deterministic=True) == again.SerializeToString(deterministic=True)
    for persona in first.personas:
        assert persona.narrative == template_narrative(persona) and persona.sources["narrative"] == "template"
        assert persona.narrative.startswith(f"{persona.segment} (")
        assert f"would pay about ${persona.wtp.p50_usd:,.0f}" in persona.narrative
        assert f"{persona.weight:.0%} of the reachable market" in persona.narrative
        assert persona.needs[0] in persona.narrative


def test_the_adapter_is_off_unless_provider_and_model_are_named():
    assert NarrativeWriter.from_settings(Settings(profile="test")) is None
    assert NarrativeWriter.from_settings(Settings(profile="test", llm_base_url="http://127.0.0.1:9/v1")) is None
    on = NarrativeWriter.from_settings(Settings(profile="test", llm_base_url="http://127.0.0.1:9/v1", llm_model="m",
                                                llm_max_completion_tokens=77, llm_concurrency=2))
    assert (on.client.model, on.max_completion_tokens, on.concurrency) == ("m", 77, 2)


async def test_narratives_come_from_the_model_and_usage_is_the_providers_count(provider):
    response = personas()
    narrator = writer(provider)
    before = len(provider.state.calls)
    await narrator.enrich(response, idea("Metered-Unit"), allowance=100_000, time_left_s=30)
    await narrator.close()
    calls = provider.state.calls[before:]
    assert len(calls) == 5 and all(c["authorization"] == f"Bearer {provider.state.api_key}" for c in calls)
    assert all(c["body"]["model"] == MODEL and c["body"]["max_tokens"] == 60 for c in calls)
    prompt, completion = provider.state.reported("Metered-Unit")
    usage = response.narrative_usage
    assert (usage.model, usage.calls, usage.failed_calls, usage.skipped) == (MODEL, 5, 0, 0)
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, completion) and prompt > 0 and completion > 0
    for persona in response.personas:
        assert persona.sources["narrative"] == f"model:{MODEL}"
        assert persona.narrative.startswith("This persona") and persona.narrative != template_narrative(persona)
    assert not [w for w in response.warnings if w.startswith("narratives:")]


@pytest.mark.parametrize("allowance", [150, 400, 700])
async def test_the_allowance_is_never_planned_past(provider, allowance):
    response = personas()
    narrator = writer(provider, concurrency=2)
    await narrator.enrich(response, idea(f"Allowance-{allowance}"), allowance=allowance, time_left_s=30)
    await narrator.close()
    usage = response.narrative_usage
    spent = usage.prompt_tokens + usage.completion_tokens
    assert spent <= allowance
    calls = provider.state.calls_about(f"Allowance-{allowance}")
    assert usage.calls == len(calls) and usage.calls + usage.skipped == 5 and usage.skipped > 0
    for call in calls:  # each call was planned (estimated prompt + max_tokens) within the allowance, and
        planned = estimate_prompt_tokens(call["body"]["messages"]) + call["body"]["max_tokens"]  # cost no more
        assert call["usage"]["prompt_tokens"] + call["usage"]["completion_tokens"] <= planned <= allowance
    templated = [p for p in response.personas if p.sources["narrative"] == "template"]
    assert len(templated) == usage.skipped and all(p.narrative == template_narrative(p) for p in templated)
    assert any(w.startswith("narratives:allowance_exhausted: ") for w in response.warnings)


async def test_a_provider_error_keeps_the_templates_stops_calling_and_is_a_warning(provider):
    response = personas()
    narrator = writer(provider, concurrency=1)
    await narrator.enrich(response, idea(f"Broken {DOWN}"), allowance=100_000, time_left_s=30)
    await narrator.close()
    assert len(provider.state.calls_about(DOWN)) == 1  # the first failure stops further calls
    usage = response.narrative_usage
    assert (usage.calls, usage.failed_calls, usage.skipped, usage.prompt_tokens, usage.completion_tokens) == (1, 1, 4, 0, 0)
    assert all(p.narrative == template_narrative(p) and p.sources["narrative"] == "template" for p in response.personas)
    warning = next(w for w in response.warnings if w.startswith("narratives:provider_error: "))
    assert "HTTP 503: The server is overloaded" in warning


async def test_an_answer_without_usage_is_refused_and_charged_its_worst_case(provider):
    response = personas(count=1)
    narrator = writer(provider)
    await narrator.enrich(response, idea(f"Unmetered {NO_USAGE}"), allowance=5_000, time_left_s=30)
    await narrator.close()
    [call] = provider.state.calls_about(NO_USAGE)
    usage = response.narrative_usage
    assert usage.failed_calls == 1 and response.personas[0].sources["narrative"] == "template"
    assert (usage.prompt_tokens, usage.completion_tokens) == (estimate_prompt_tokens(call["body"]["messages"]), 60)
    assert any("carries no usage" in w for w in response.warnings)


async def test_a_slow_provider_times_out_into_the_template(provider):
    response = personas(count=2)
    narrator = writer(provider, timeout_s=0.5)
    await narrator.enrich(response, idea(f"Slow {SLOW}"), allowance=5_000, time_left_s=30)
    await narrator.close()
    assert response.narrative_usage.failed_calls >= 1
    assert all(p.sources["narrative"] == "template" for p in response.personas)
    assert any("no answer within 0.5s" in w for w in response.warnings)


async def test_a_wrong_key_is_a_provider_error_and_no_allowance_means_no_call(provider):
    response = personas(count=2)
    narrator = writer(provider, key="sk-wrong", concurrency=1)
    await narrator.enrich(response, idea("Wrong-Key"), allowance=5_000, time_left_s=30)
    await narrator.close()
    assert any("HTTP 401: Incorrect API key provided" in w for w in response.warnings)
    before = len(provider.state.calls)
    unreserved = personas(count=2)
    narrator = writer(provider)
    await narrator.enrich(unreserved, idea("Not-Reserved"), allowance=0, time_left_s=30)
    await narrator.close()
    assert len(provider.state.calls) == before and unreserved.narrative_usage.skipped == 2
    assert any(w.startswith("narratives:not_reserved") for w in unreserved.warnings)


def test_the_prompt_carries_the_facts_and_the_idea():
    persona = personas(count=1).personas[0]
    messages = narrative_prompt(persona, idea("Ledgerly"))
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "Ledgerly: budgeting app for freelancers" in messages[1]["content"]
    assert template_narrative(persona) in messages[1]["content"]
