"""Schemathesis against the OpenAPI document the running gateway serves, with a token: whatever the
generated request, no endpoint answers 5xx (bounded: a few examples per operation, no shrinking).

The mesh behind it is real, with small compute ceilings so that the runs generated bodies start
stay cheap (a run over the ceiling is refused by overwatch, which is an answer, not an error)."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from conftest import SECRET, TOKEN, start_mesh
from smvm.launcher import unclean_exits
from tractionbuild_double import TractionBuildDouble

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 12


@pytest.fixture(scope="module")
def fuzz_mesh(tmp_path_factory):
    tb = TractionBuildDouble(SECRET)
    tb.start()
    mesh = start_mesh(tmp_path_factory.mktemp("fuzzmesh"), tb, max_iterations=2_000,
                      max_utility_evaluations=50_000_000)
    yield mesh
    codes = mesh.stop()
    tb.stop()
    assert not (unclean := unclean_exits(codes)), unclean


@pytest.fixture(scope="module")
def served_schema(fuzz_mesh):
    document = httpx.get(f"{fuzz_mesh.gateway_url}/openapi.json", timeout=10)
    assert document.status_code == 200
    return schemathesis.openapi.from_url(f"{fuzz_mesh.gateway_url}/openapi.json")


def _fuzz(schema, base_url: str, mode: GenerationMode) -> tuple[int, list[str]]:
    """Run every operation's strategy; return how many requests were made and what failed.
    (Schemathesis's pytest plugin does not run under this pytest, so the loop is explicit.)"""
    made, failures = [0], []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck), database=None)
        def run(case):
            response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
            made[0] += 1
            try:
                case.validate_response(response, checks=[not_a_server_error])
            except AssertionError as exc:  # schemathesis's failures are AssertionErrors
                failures.append(f"{operation.label}: {exc}")
                return
            # Every answer, good or bad, carries the correlation id; every error the guide's body.
            if not response.headers.get("x-correlation-id"):
                failures.append(f"{operation.label}: no X-Correlation-ID")
            if response.status_code >= 400 and set(response.json()) != {"error", "message", "details", "run_id"}:
                failures.append(f"{operation.label}: {response.status_code} without the error body: {response.text}")

        try:
            run()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE, operation.label  # nothing invalid to send (no inputs)
    return made[0], failures


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_no_generated_request_gets_a_server_error(served_schema, fuzz_mesh, mode):
    made, failures = _fuzz(served_schema, fuzz_mesh.gateway_url, mode)
    operations = len(list(served_schema.get_all_operations()))
    assert operations >= 8  # the guide's five endpoints, the run list and the admin routes
    assert made >= operations * (1 if mode == GenerationMode.POSITIVE else 0.5)  # (almost) every operation ran
    assert failures == [], "\n".join(failures[:10])


IDEA = {
    "project_id": "PROJ-FUZZ",
    "business_idea": {"title": "Fuzzed idea", "description": "A budgeting app", "target_market": "US millennials",
                      "value_proposition": "cheap", "estimated_tam": 1e9, "estimated_sam": 1e8, "estimated_som": 1e6,
                      "price": {"amount": 5, "currency": "USD", "billing_period": "monthly"}},
    "metadata": {"initiated_by": "fuzz@example.com", "source_system": "tractionbuild"},
}
_int = st.one_of(st.none(), st.integers(-5, 5), st.integers(-(2**31), 2**31 - 1), st.integers(0, 3000))


@given(configuration=st.fixed_dictionaries({}, optional={
    "simulation_iterations": _int, "persona_count": _int, "competitor_count": _int,
    "max_tokens_per_run": _int, "timeout_seconds": _int, "months": _int, "price_points": _int}),
    callback=st.sampled_from([None, "http://127.0.0.1:9/cb", "ftp://x/cb", "http://u:p@127.0.0.1/cb",
                              "http://10.1.2.3/cb", "http://[::1]:bad/cb"]))
@settings(max_examples=25, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck),
          database=None)
def test_valid_ideas_with_fuzzed_configuration_are_201_or_a_400_naming_the_field(fuzz_mesh, configuration, callback):
    body = {**IDEA, "configuration": {k: v for k, v in configuration.items() if v is not None}}
    if callback:
        body["metadata"] = {**IDEA["metadata"], "callback_url": callback}
    response = httpx.post(f"{fuzz_mesh.gateway_url}/api/v1/validation/runs", json=body,
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert response.status_code in (201, 400, 429), response.text
    if response.status_code == 400:
        field = response.json()["details"]["field"]
        assert field.startswith(("configuration.", "metadata.callback_url")), response.text
