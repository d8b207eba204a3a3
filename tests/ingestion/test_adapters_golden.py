"""Golden-file tests of every grounding adapter: good files -> rows and report; broken files -> the error.

Fixtures live in tests/fixtures/grounding/<kind>/; each has a `<file>.golden.json` beside it holding
the expected GroundingData (good files) or the expected error (broken files). To regenerate after a
deliberate change: SMVM_UPDATE_GOLDEN=1 pytest tests/ingestion/test_adapters_golden.py, then review
the diff - a golden file changed by accident is a bug.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from google.protobuf import json_format

from smvm.errors import InvalidArgument

from services.ingestion.importer import run_import

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "grounding"
CASES = sorted(p for p in FIXTURES.glob("*/*") if p.suffix in (".csv", ".json", ".jsonl") and ".golden" not in p.name)
UPDATE = os.environ.get("SMVM_UPDATE_GOLDEN") == "1"


def _outcome(path: Path) -> dict:
    try:
        result = run_import(path.parent.name, "", path.read_bytes(), path.name)
    except InvalidArgument as exc:
        return {"error": {"field": exc.field, "reason": exc.reason, "message": exc.message}}
    return {"import_id": result.import_id,
            "grounding": json_format.MessageToDict(result.grounding, preserving_proto_field_name=True)}


def test_every_kind_has_good_and_broken_fixtures():
    kinds = {p.parent.name for p in CASES}
    assert kinds == {"van_westendorp", "gabor_granger", "competitors", "market_size"}
    for kind in kinds:
        names = [p.name for p in CASES if p.parent.name == kind]
        assert any(n.startswith("broken") for n in names), kind
        assert any(not n.startswith("broken") for n in names), kind
    assert {p.suffix for p in CASES} == {".csv", ".json", ".jsonl"}


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.name}" for p in CASES])
def test_adapter_matches_golden_file(path: Path):
    golden = path.with_name(path.name + ".golden.json")
    outcome = _outcome(path)
    if UPDATE:
        golden.write_text(json.dumps(outcome, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    assert golden.exists(), f"no golden file {golden.name}; run with SMVM_UPDATE_GOLDEN=1 and review it"
    assert outcome == json.loads(golden.read_text(encoding="utf-8"))
    assert path.name.startswith("broken") == ("error" in outcome)


@pytest.mark.parametrize("path", [p for p in CASES if not p.name.startswith("broken")], ids=lambda p: p.name)
def test_no_personal_data_survives_an_import(path: Path):
    text = json.dumps(_outcome(path))
    for secret in ("jane.doe@example.com", "jane@acme.example", "555) 123-4567", "Jane Smith"):
        assert secret not in text
