"""The validation pipeline: personas -> competitors -> simulation -> analysis -> overwatch review.

Ingestion runs synchronously at submission (so a bad idea is a 400, not a failed run); this module
runs the rest in the background, calling each stage service over gRPC with a deadline, committing
each stage's output to the run directory before the next stage starts, and recording every state
change in the run store. A stage that fails fails the run with the stage and status code named; a
run that outlives its `timeout_seconds` ends TIMEOUT.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time

import grpc
from google.protobuf import json_format

from smvm import correlation, metrics
from smvm.channels import addresses_of, open_channel
from smvm.config import Settings
from smvm.v1 import (
    analysis_service_pb2,
    analysis_service_pb2_grpc,
    competitor_service_pb2,
    competitor_service_pb2_grpc,
    decision_pb2,
    idea_pb2,
    ingestion_service_pb2_grpc,
    overwatch_service_pb2,
    overwatch_service_pb2_grpc,
    persona_service_pb2,
    persona_service_pb2_grpc,
    run_pb2,
    simulation_pb2,
    simulation_service_pb2,
    simulation_service_pb2_grpc,
)

from services.orchestrator import simconfig
from services.orchestrator.callbacks.emitter import CallbackEmitter
from services.orchestrator.rundir import iso, utcnow
from services.orchestrator.store import STAGE_WEIGHTS, RunStore, parse_time, progress_before

log = logging.getLogger(__name__)


def to_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def short_enum(name: str, prefix: str) -> str:
    return name[len(prefix):] if name.startswith(prefix) else name


class StageFailed(Exception):
    def __init__(self, stage: str, message: str):
        super().__init__(f"stage {stage} failed: {message}")
        self.stage = stage


class StageClients:
    """One channel per stage service; the simulation channel round-robins over its replicas."""

    def __init__(self, settings: Settings):
        self._channels = {
            name: open_channel(settings.addr(name))
            for name in ("ingestion", "personas", "competitors", "simulation", "analysis", "overwatch")
        }
        self.ingestion = ingestion_service_pb2_grpc.IngestionServiceStub(self._channels["ingestion"])
        self.personas = persona_service_pb2_grpc.PersonaServiceStub(self._channels["personas"])
        self.competitors = competitor_service_pb2_grpc.CompetitorServiceStub(self._channels["competitors"])
        self.simulation = simulation_service_pb2_grpc.SimulationServiceStub(self._channels["simulation"])
        self.analysis = analysis_service_pb2_grpc.AnalysisServiceStub(self._channels["analysis"])
        self.overwatch = overwatch_service_pb2_grpc.OverwatchServiceStub(self._channels["overwatch"])
        self.simulation_replicas = len(addresses_of(settings.simulation_addr))

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self._channels.values()))


@dataclasses.dataclass
class RunContext:
    run_id: str
    project_id: str
    idea: idea_pb2.Idea
    configuration: run_pb2.RunConfiguration
    seed: int
    deadline: float  # time.monotonic() by which the whole run must end


class Pipeline:
    def __init__(self, settings: Settings, store: RunStore, clients: StageClients,
                 callbacks: CallbackEmitter | None = None):
        self.settings = settings
        self.store = store
        self.clients = clients
        # Callbacks to TractionBuild: one update per state change below, alerts where the guide names one.
        self.callbacks = callbacks

    def _notify(self, record, step_name: str = "", decision_doc: dict | None = None) -> None:
        if self.callbacks is not None:
            self.callbacks.update(record, step_name=step_name, decision_doc=decision_doc)

    def _alert(self, ctx: RunContext, alert_type: str, severity: str, message: str, details: dict | None = None) -> None:
        if self.callbacks is not None:
            self.callbacks.alert(self.store.get(ctx.run_id), alert_type, severity, message, details)

    def _finished(self, record) -> None:
        """Metrics of a run that reached its outcome."""
        metrics.RUNS_FINISHED.labels(record.state).inc()
        created = parse_time(record.created_at)
        if created is not None:
            metrics.RUN_DURATION.labels(record.state).observe(max(0.0, (utcnow() - created).total_seconds()))

    # ------------------------------------------------------------------ helpers
    def _timeout(self, ctx: RunContext, stage_cap: float) -> float:
        remaining = ctx.deadline - time.monotonic()
        if remaining <= 0:
            raise asyncio.TimeoutError
        return min(stage_cap, remaining)

    def _start(self, ctx: RunContext, stage: str) -> None:
        record = self.store.get(ctx.run_id)
        results = dict(record.stage_results, **{stage: "in_progress"})
        record = self.store.update(
            ctx.run_id, "stage.started", state="RUNNING", current_stage=stage,
            progress=progress_before(stage), stage_results=results, payload={"stage": stage},
        )
        self._notify(record, stage)

    def _done(self, ctx: RunContext, stage: str, summary: dict) -> None:
        record = self.store.get(ctx.run_id)
        results = dict(record.stage_results, **{stage: "completed"})
        record = self.store.update(
            ctx.run_id, "stage.completed", stage_results=results,
            progress=progress_before(stage) + STAGE_WEIGHTS[stage], payload={"stage": stage, **summary},
        )
        self._notify(record, stage)

    async def _call(self, ctx: RunContext, stage: str, coro_fn, cap: float):
        try:
            return await coro_fn(self._timeout(ctx, cap))
        except grpc.aio.AioRpcError as err:
            raise stage_error(ctx, stage, err) from err

    # ------------------------------------------------------------------ the run
    async def execute(self, ctx: RunContext) -> None:
        """Run the stages after ingestion; never raises (the outcome lands in the store)."""
        token = correlation.set(self.store.get(ctx.run_id).correlation_id)
        try:
            metrics.TOKENS_BUDGETED.inc(ctx.configuration.max_tokens_per_run)
            self._notify(self.store.get(ctx.run_id), "ingestion")
            if ctx.idea.warnings:
                self._alert(ctx, "quality_warning", "warning", "the idea was accepted with data-quality warnings",
                            {"warnings": list(ctx.idea.warnings)})
            await self._stages(ctx)
        except asyncio.TimeoutError:
            self._fail(ctx, "TIMEOUT", f"run exceeded timeout_seconds={ctx.configuration.timeout_seconds}", "run.timeout")
        except StageFailed as failure:
            self._fail(ctx, "FAILED", str(failure), "run.failed", stage=failure.stage)
        except asyncio.CancelledError:
            self._fail(ctx, "FAILED", "interrupted: the orchestrator shut down during the run", "run.failed")
            raise
        except Exception as exc:  # a bug must still end the run visibly, not leave it RUNNING
            log.exception("pipeline crashed")
            self._fail(ctx, "FAILED", f"internal error: {type(exc).__name__}", "run.failed")
        finally:
            correlation.reset(token)

    def _fail(self, ctx: RunContext, state: str, message: str, event: str, stage: str | None = None) -> None:
        record = self.store.get(ctx.run_id)
        results = dict(record.stage_results)
        failed = stage or record.current_stage
        if failed and results.get(failed) == "in_progress":
            results[failed] = "failed"
        log.warning("run ended %s: %s", state, message)
        record = self.store.update(ctx.run_id, event, state=state, error=message, stage_results=results, payload={"error": message})
        self._finished(record)
        self._notify(record, failed or "")
        if state == "TIMEOUT":
            self._alert(ctx, "timeline_slip", "critical",
                        f"run exceeded timeout_seconds={ctx.configuration.timeout_seconds}; manual review required",
                        {"timeout_seconds": ctx.configuration.timeout_seconds, "stage": failed or "",
                         "stage_results": results})
        elif "RESOURCE_EXHAUSTED" in message:
            self._alert(ctx, "resource_constraint", "critical", message, {"stage": failed or ""})

    async def _stages(self, ctx: RunContext) -> None:
        cfg = ctx.configuration
        cap = self.settings.stage_timeout_s
        rundir = self.store.rundir(ctx.run_id)

        self._start(ctx, "personas")
        personas = await self._call(ctx, "personas", lambda t: self.clients.personas.GeneratePersonas(
            persona_service_pb2.GeneratePersonasRequest(
                idea=ctx.idea, count=cfg.persona_count, seed=simconfig.stage_seed(ctx.seed, "personas")),
            timeout=t), cap)
        rundir.write_json("outputs/personas.output.json", to_dict(personas))
        self._done(ctx, "personas", {"personas": len(personas.personas), "prior": personas.prior,
                                     "bias_passed": personas.bias_report.passed})
        if not personas.bias_report.passed:
            self._alert(ctx, "quality_warning", "warning", "the persona sample failed its bias checks",
                        {"bias_report": to_dict(personas.bias_report)})

        self._start(ctx, "competitors")
        landscape = await self._call(ctx, "competitors", lambda t: self.clients.competitors.BuildLandscape(
            competitor_service_pb2.BuildLandscapeRequest(
                idea=ctx.idea, count=cfg.competitor_count, seed=simconfig.stage_seed(ctx.seed, "competitors")),
            timeout=t), cap)
        rundir.write_json("outputs/competitors.output.json", to_dict(landscape))
        self._done(ctx, "competitors", {"competitors": len(landscape.competitors), "prior": landscape.prior})

        self._start(ctx, "simulation")
        sim_config = simconfig.build_simulation_config(
            sam_usd=ctx.idea.market_size.sam_usd, personas=personas, landscape=landscape, configuration=cfg,
            seed=simconfig.stage_seed(ctx.seed, "simulation"),
            max_utility_evaluations=self.settings.max_utility_evaluations,
        )
        rundir.write_json("outputs/simulation.config.json", to_dict(sim_config))
        budget = await self._call(ctx, "simulation", lambda t: self.clients.overwatch.CheckBudget(
            overwatch_service_pb2.CheckBudgetRequest(
                run_id=ctx.run_id, project_id=ctx.project_id,
                requested_utility_evaluations=planned_utility_evaluations(sim_config),
                max_tokens_per_run=cfg.max_tokens_per_run,
                max_utility_evaluations=self.settings.max_utility_evaluations),
            timeout=t), cap)
        result = await self._simulate(ctx, sim_config)
        rundir.write_json("outputs/simulation.result.json", to_dict(result))
        self._done(ctx, "simulation", {"iterations": result.iterations,
                                       "utility_evaluations": result.utility_evaluations,
                                       "kernel_seconds": round(result.kernel_seconds, 4),
                                       "budget_warnings": list(budget.warnings)})
        metrics.UTILITY_EVALUATIONS.inc(result.utility_evaluations)
        metrics.SIMULATION_ITERATIONS.inc(result.iterations)
        if budget.warnings:
            self._alert(ctx, "resource_constraint", "warning", "; ".join(budget.warnings),
                        {"utilisation": budget.utilisation, "warnings": list(budget.warnings)})

        self._start(ctx, "analysis")
        analysis = await self._call(ctx, "analysis", lambda t: self.clients.analysis.Analyze(
            analysis_service_pb2.AnalyzeRequest(
                idea=ctx.idea, personas=personas.personas, competitors=landscape.competitors,
                our_offering=landscape.our_offering, simulation_config=sim_config, simulation=result,
                bias_report=personas.bias_report),
            timeout=t), cap)
        decision = analysis.decision
        recommendation = short_enum(decision_pb2.Recommendation.Name(decision.recommendation), "RECOMMENDATION_")
        rundir.write_text("reports/validation_report.md", analysis.report_markdown)
        self._done(ctx, "analysis", {"recommendation": recommendation, "confidence": round(decision.confidence, 4),
                                     "composite_score": round(decision.composite_score, 2)})

        self._start(ctx, "overwatch")
        review_response = await self._call(ctx, "overwatch", lambda t: self.clients.overwatch.ReviewDecision(
            overwatch_service_pb2.ReviewDecisionRequest(
                run_id=ctx.run_id, idea=ctx.idea, decision=decision, bias_report=personas.bias_report,
                personas=personas.personas, simulation=without_samples(result)),
            timeout=t), cap)
        review = review_response.review
        verdict = short_enum(decision_pb2.ReviewVerdict.Name(review.verdict), "REVIEW_VERDICT_")
        decision_doc = decision_output(ctx, decision, review, recommendation, verdict)
        rundir.write_json("outputs/decision.output.json", decision_doc)
        rundir.write_json("reports/validation_summary.json", validation_summary(ctx, decision_doc, result, personas, landscape))
        self._done(ctx, "overwatch", {"verdict": verdict, "reasons": [r.code for r in review.reasons]})
        record = self.store.update(
            ctx.run_id, "run.decision_ready", state="DECISION_READY", current_stage="", progress=1.0,
            recommendation=recommendation, review_verdict=verdict,
            payload={"recommendation": recommendation, "confidence": decision.confidence, "verdict": verdict},
        )
        self._finished(record)
        self._notify(record, "overwatch", decision_doc)
        if recommendation == "KILL" or verdict == "VETO":
            self._alert(ctx, "risk_escalation", "critical" if verdict == "VETO" else "warning",
                        f"recommendation {recommendation}, overwatch verdict {verdict}",
                        {"recommendation": recommendation, "verdict": verdict,
                         "reasons": [r.code for r in review.reasons],
                         "critical_success_factors": list(decision.critical_success_factors)})

    async def _simulate(self, ctx: RunContext, config: simulation_pb2.SimulationConfig) -> simulation_pb2.SimulationResult:
        shards = self.settings.simulation_shards or self.clients.simulation_replicas
        chunk = config.chunk_iterations or simconfig.CHUNK_ITERATIONS
        n_chunks = math.ceil(config.iterations / chunk)
        shards = max(1, min(shards, n_chunks))
        cap = self.settings.simulation_timeout_s
        base = progress_before("simulation")
        weight = STAGE_WEIGHTS["simulation"]
        done = [0] * shards

        def tick(i: int, progress: simulation_pb2.SimulationProgress) -> None:
            done[i] = progress.chunks_done
            self.store.set_progress(ctx.run_id, base + weight * sum(done) / n_chunks)

        try:
            if shards == 1:
                result = None
                call = self.clients.simulation.RunSimulation(
                    simulation_service_pb2.RunSimulationRequest(config=config), timeout=self._timeout(ctx, cap))
                async for message in call:
                    if message.HasField("progress"):
                        tick(0, message.progress)
                    elif message.HasField("result"):
                        result = message.result
                if result is None:
                    raise StageFailed("simulation", "stream ended without a result")
                return result

            bounds = split_chunks(n_chunks, shards)

            async def run_shard(i: int, start: int, count: int) -> simulation_pb2.SimulationShard:
                call = self.clients.simulation.RunShard(
                    simulation_service_pb2.RunShardRequest(config=config, chunk_start=start, chunk_count=count),
                    timeout=self._timeout(ctx, cap))
                shard = None
                async for message in call:
                    if message.HasField("progress"):
                        tick(i, message.progress)
                    elif message.HasField("shard"):
                        shard = message.shard
                if shard is None:
                    raise StageFailed("simulation", f"shard {i} ended without a result")
                return shard

            parts = await asyncio.gather(*(run_shard(i, s, c) for i, (s, c) in enumerate(bounds)))
            merged = await self.clients.simulation.MergeShards(
                simulation_service_pb2.MergeShardsRequest(config=config, shards=parts), timeout=self._timeout(ctx, cap))
            return merged.result
        except grpc.aio.AioRpcError as err:
            raise stage_error(ctx, "simulation", err) from err


def stage_error(ctx: RunContext, stage: str, err: grpc.aio.AioRpcError) -> Exception:
    """A stage's RPC error as the run's outcome: a deadline that was the run's own is a TIMEOUT."""
    if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() >= ctx.deadline - 0.05:
        return asyncio.TimeoutError()
    return StageFailed(stage, f"{err.code().name}: {err.details()}")


def split_chunks(n_chunks: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous, near-equal chunk ranges (start, count) covering [0, n_chunks)."""
    base, extra = divmod(n_chunks, shards)
    bounds, start = [], 0
    for i in range(shards):
        count = base + (1 if i < extra else 0)
        bounds.append((start, count))
        start += count
    return bounds


def planned_utility_evaluations(config: simulation_pb2.SimulationConfig) -> int:
    """Utility evaluations a config will do: customers x offerings (ours + competitors) x price points."""
    offerings = 1 + len(config.competitors)
    return config.iterations * simconfig.customers_per_iteration(config) * offerings * max(1, len(config.price_grid))


def without_samples(result: simulation_pb2.SimulationResult) -> simulation_pb2.SimulationResult:
    slim = simulation_pb2.SimulationResult()
    slim.CopyFrom(result)
    del slim.samples[:]
    return slim


def decision_output(ctx: RunContext, decision, review, recommendation: str, verdict: str) -> dict:
    """decision.output.json: the guide's top-level fields, the review, and the full decision."""
    return {
        "run_id": ctx.run_id,
        "project_id": ctx.project_id,
        "recommendation": recommendation,
        "confidence": decision.confidence,
        "composite_score": decision.composite_score,
        "critical_success_factors": list(decision.critical_success_factors),
        "next_steps": list(decision.next_steps),
        "gate_decision": decision.gate.gate_decision,
        "review": {"verdict": verdict, "reasons": [to_dict(r) for r in review.reasons],
                   "policy_version": review.policy_version},
        "released": verdict != "VETO",
        "decided_at": iso(utcnow()),
        "decision": to_dict(decision),
    }


def validation_summary(ctx: RunContext, decision_doc: dict, result, personas, landscape) -> dict:
    final = result.month_stats[-1] if result.month_stats else None
    return {
        "run_id": ctx.run_id,
        "project_id": ctx.project_id,
        "idea_title": ctx.idea.title,
        "domain": ctx.idea.domain,
        "recommendation": decision_doc["recommendation"],
        "confidence": decision_doc["confidence"],
        "review_verdict": decision_doc["review"]["verdict"],
        "released": decision_doc["released"],
        "personas": len(personas.personas),
        "competitors": len(landscape.competitors),
        "simulation": {
            "iterations": result.iterations,
            "months": result.months,
            "seed": str(result.seed),
            "utility_evaluations": result.utility_evaluations,
            "final_month_customers_p50": final.customers.p50 if final else 0.0,
            "final_month_revenue_p50_usd": final.revenue_usd.p50 if final else 0.0,
        },
    }
