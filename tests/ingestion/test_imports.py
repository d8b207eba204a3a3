"""Grounding imports end to end: known answers of the adapters, all-or-nothing storage, ImportGrounding
over real gRPC, and NormalizeIdea resolving grounding_refs into Idea.grounding."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from smvm.config import Settings
from smvm.errors import InvalidArgument
from smvm.v1 import ingestion_service_pb2 as ipb, ingestion_service_pb2_grpc as igrpc

from services.ingestion import fx, import_store, quality
from services.ingestion.alerts import quality_alert
from services.ingestion.adapters.gabor_granger import score_to_intent
from services.ingestion.import_store import ImportStore
from services.ingestion.importer import import_id_of, run_import
from services.ingestion.normalize import normalize_idea
from services.ingestion.servicer import build_host, import_grounding

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "grounding"


def _vw_csv(rows: list[tuple[float, float, float, float]]) -> bytes:
    body = "\n".join(f"R{i},{a},{b},{c},{d}" for i, (a, b, c, d) in enumerate(rows))
    return ("respondent_id,too_cheap,cheap,expensive,too_expensive\n" + body + "\n").encode()


def test_prices_are_converted_to_monthly_usd_at_the_dated_rate():
    result = run_import("van_westendorp", "", (FIXTURES / "van_westendorp" / "small_eur_annual.jsonl").read_bytes(),
                        "small_eur_annual.jsonl")
    eur = fx.load_fx_table().units_per_usd["EUR"]
    first = result.grounding.van_westendorp[0]
    assert first.too_cheap == pytest.approx(60 / 12 / eur, abs=1e-4)
    assert first.too_expensive == pytest.approx(360 / 12 / eur, abs=1e-4)


def test_gabor_granger_scores_map_linearly():
    assert [score_to_intent(s) for s in range(1, 6)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    body = b"price,intent_score\n10,5\n20,3\n30,1\n"
    answers = run_import("gabor_granger", "csv", body).grounding.gabor_granger
    assert [(a.price, a.purchase_intent) for a in answers] == [(10, 1.0), (20, 0.5), (30, 0.0)]


def test_outlier_rule_flags_only_gross_outliers():
    rows = [(5 + i % 4, 10 + i % 4, 20 + i % 4, 30 + i % 4) for i in range(12)]
    assert run_import("van_westendorp", "csv", _vw_csv(rows)).report.outliers == 0
    rows.append((500, 1000, 2000, 3000))  # 100x the rest
    assert run_import("van_westendorp", "csv", _vw_csv(rows)).report.outliers == 1
    assert quality.outlier_rows([{"x": v} for v in [1, 1, 1, 1, 1, 1, 1, 1000]]) == {7}
    assert quality.outlier_rows([{"x": v} for v in [1, 1000]]) == set()  # too few values to judge


def test_import_id_is_a_content_address():
    body = (FIXTURES / "market_size" / "good.csv").read_bytes()
    a = run_import("market_size", "csv", body)
    assert a.import_id == import_id_of("market_size", "csv", body) == run_import("market_size", "csv", body).import_id
    assert run_import("market_size", "csv", body + b"som,1e6,USD,other,2026\n").import_id != a.import_id


def test_unknown_kind_and_format_name_their_field():
    with pytest.raises(InvalidArgument) as err:
        run_import("survey", "csv", b"a\n1\n")
    assert err.value.field == "kind"
    with pytest.raises(InvalidArgument) as err:
        run_import("competitors", "xlsx", b"a\n1\n")
    assert err.value.field == "format"
    with pytest.raises(InvalidArgument) as err:
        run_import("competitors", "", b"name,price\nA,1\n", "list.txt")
    assert err.value.field == "format" and err.value.reason == "REQUIRED"


def test_store_is_atomic_idempotent_and_never_holds_unmasked_pii(tmp_path):
    store = ImportStore(tmp_path)
    body = (FIXTURES / "van_westendorp" / "good.csv").read_bytes()
    request = ipb.ImportGroundingRequest(kind="van_westendorp", content=body, source_name="good.csv")
    first = import_grounding(request, store)
    again = import_grounding(request, store)
    assert (first.existed, again.existed) == (False, True) and first.import_id == again.import_id
    files = list((tmp_path / "imports").iterdir())
    assert [f.name for f in files] == [f"{first.import_id}.json"]
    text = files[0].read_text()
    assert "jane.doe@example.com" not in text and "anon-" in text
    assert json.loads(text)["quality"][0]["rows_accepted"] == first.report.rows_accepted == 41


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*/broken*")), ids=lambda p: p.name)
def test_a_broken_file_stores_nothing(tmp_path, path):
    store = ImportStore(tmp_path)
    with pytest.raises(InvalidArgument):
        import_grounding(ipb.ImportGroundingRequest(kind=path.parent.name, content=path.read_bytes(),
                                                    source_name=path.name), store)
    assert not (tmp_path / "imports").exists() or not any((tmp_path / "imports").iterdir())


def _store_fixture(store: ImportStore, kind: str, name: str) -> str:
    path = FIXTURES / kind / name
    return import_grounding(ipb.ImportGroundingRequest(kind=kind, content=path.read_bytes(), source_name=name),
                            store).import_id


def test_normalize_resolves_references_into_grounding(tmp_path, business_body, t0_body, to_request):
    store = ImportStore(tmp_path)
    vw = _store_fixture(store, "van_westendorp", "good.csv")
    comp = _store_fixture(store, "competitors", "good.csv")  # raises quality_warning
    business_body["grounding_refs"] = [vw, comp.upper(), vw]
    idea = normalize_idea(to_request("business_idea", business_body), store)
    assert list(idea.grounding_refs) == list(idea.grounding.import_ids) == [vw, comp]
    assert len(idea.grounding.van_westendorp) == 41 and len(idea.grounding.competitors) == 4
    assert {c.import_id for c in idea.grounding.competitors} == {comp}
    assert idea.grounding.quality_warning is True
    assert idea.grounding.confidence_factor == pytest.approx(min(q.quality_score for q in idea.grounding.quality
                                                                 if q.quality_warning))
    assert any(w.startswith(f"grounding:quality_warning: import {comp[:12]}") for w in idea.warnings)

    t0_body["grounding_refs"] = [vw]
    t0 = normalize_idea(to_request("idea", t0_body), store)
    assert t0.grounding.quality_warning is False and t0.grounding.confidence_factor == 1.0


@pytest.mark.parametrize("ref, reason", [("0" * 64, "UNKNOWN_IMPORT"), ("not-an-id", "BAD_IMPORT_ID")])
def test_unknown_or_malformed_reference_names_the_field(tmp_path, business_body, to_request, ref, reason):
    store = ImportStore(tmp_path)
    vw = _store_fixture(store, "van_westendorp", "good.csv")
    business_body["grounding_refs"] = [vw, ref]
    with pytest.raises(InvalidArgument) as err:
        normalize_idea(to_request("business_idea", business_body), store)
    assert (err.value.field, err.value.reason) == ("business_idea.grounding_refs[1]", reason)


@pytest.fixture
async def stub(tmp_path):
    host = build_host(Settings(runs_dir=tmp_path), "127.0.0.1:0")
    port = await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield igrpc.IngestionServiceStub(channel)
    finally:
        await host.stop(0)


async def test_import_and_reference_over_grpc(stub, tmp_path, t0_body, to_request):
    body = (FIXTURES / "gabor_granger" / "good.csv").read_bytes()
    answer = await stub.ImportGrounding(ipb.ImportGroundingRequest(kind="gabor_granger", content=body,
                                                                   source_name="gg.csv"), timeout=10)
    assert answer.report.rows_accepted == 40 and (tmp_path / "imports" / f"{answer.import_id}.json").exists()
    t0_body["grounding_refs"] = [answer.import_id]
    idea = (await stub.NormalizeIdea(to_request("idea", t0_body), timeout=10)).idea
    assert len(idea.grounding.gabor_granger) == 40

    broken = (FIXTURES / "van_westendorp" / "broken_missing_column.csv").read_bytes()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ImportGrounding(ipb.ImportGroundingRequest(kind="van_westendorp", format="csv", content=broken),
                                   timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violation = error_details_pb2.BadRequest()
    assert rpc_status.from_call(err.value).details[0].Unpack(violation)
    assert violation.field_violations[0].field == "content.too_expensive"
    assert len(list((tmp_path / "imports").glob("*.json"))) == 1

    t0_body["grounding_refs"] = ["f" * 64]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.NormalizeIdea(to_request("idea", t0_body), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rpc_status.from_call(err.value).details[0].Unpack(violation)
    assert violation.field_violations[0].field == "idea.grounding_refs[0]"


def test_rows_without_respondent_ids_stay_distinct_across_files():
    a = run_import("gabor_granger", "csv", b"price,purchase_intent\n10,0.5\n20,0.2\n")
    b = run_import("gabor_granger", "csv", b"price,purchase_intent\n10,0.6\n20,0.3\n")
    ids = [x.respondent_id for r in (a, b) for x in r.grounding.gabor_granger]
    assert len(set(ids)) == 4 and ids[0] == f"{a.import_id[:12]}:row-1"


@pytest.mark.parametrize("body, features", [
    (b"name;price;features\nA;10;invoicing, reports\nB;12,5;invoicing\n", ["invoicing, reports"]),
    (b"name\tprice\tfeatures\nA\t10\tinvoicing, reports\nB\t12.5\tinvoicing\n", ["invoicing, reports"]),
    (b'name,price,features\nA,10,"invoicing; reports"\nB,12.5,invoicing\n', ["invoicing", "reports"]),
])
def test_csv_delimiter_is_read_from_the_header(body, features):
    result = run_import("competitors", "csv", body)
    assert [(c.name, c.price_amount) for c in result.grounding.competitors] == [("A", 10), ("B", 12.5)]
    assert list(result.grounding.competitors[0].features) == features


def test_quality_alert_names_the_poor_imports_only(tmp_path, business_body, to_request):
    store = ImportStore(tmp_path)
    vw = _store_fixture(store, "van_westendorp", "good.csv")
    business_body["grounding_refs"] = [vw]
    assert quality_alert(normalize_idea(to_request("business_idea", business_body), store)) is None
    comp = _store_fixture(store, "competitors", "good.csv")
    business_body["grounding_refs"] = [vw, comp]
    idea = normalize_idea(to_request("business_idea", business_body), store)
    alert = quality_alert(idea)
    assert alert["alert_type"] == "quality_warning"
    assert [i["import_id"] for i in alert["details"]["imports"]] == [comp]
    assert alert["details"]["imports"][0]["findings"][0].startswith("quality:rejected_share: 2/7")
    assert alert["details"]["confidence_factor"] == idea.grounding.confidence_factor < 1


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_deeply_nested_json_is_refused_not_a_crash(fmt):
    with pytest.raises(InvalidArgument) as err:
        run_import("competitors", fmt, b"[" * 200_000 + b"]" * 200_000)
    assert err.value.field == "content"


def test_references_holding_too_many_rows_are_refused(tmp_path, business_body, to_request, monkeypatch):
    store = ImportStore(tmp_path)
    vw = _store_fixture(store, "van_westendorp", "good.csv")  # 41 rows
    gg = _store_fixture(store, "gabor_granger", "good.csv")  # 40 rows
    monkeypatch.setattr(import_store, "MAX_RESOLVED_ROWS", 60)
    business_body["grounding_refs"] = [vw, gg]
    with pytest.raises(InvalidArgument) as err:
        normalize_idea(to_request("business_idea", business_body), store)
    assert (err.value.field, err.value.reason) == ("business_idea.grounding_refs[1]", "TOO_MANY_ROWS")
