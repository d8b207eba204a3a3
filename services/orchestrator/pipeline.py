"""The validation pipeline: personas -> competitors -> simulation -> analysis -> overwatch review.

Ingestion runs synchronously at submission (so a bad idea is a 400, not a failed run); this module
runs the rest in the background, calling each stage service over gRPC with a deadline, committing
each stage's output (to the store, in the same transaction as its stage.completed event, and to the
run directory) before the next stage starts. A stage whose output is committed is never called again
for that run, so `execute` on a run interrupted by a crash resumes after its last completed stage.

A stage service that is down (UNAVAILABLE, e.g. killed and restarting) is retried with backoff
within the stage's budget (`stage_timeout_s`, `simulation_timeout_s`); past it the run ends FAILED
naming the stage. Other stage errors fail the run at once; a run that outlives its
`timeout_seconds` ends TIMEOUT. If the store's database goes away, the run waits for it and then
carries on from its last committed stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import time

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from smvm import correlation, metrics
from smvm.channels import ClientSecurity, addresses_of, open_channel
from smvm.config import Settings
from smvm.db import DatabaseUnavailable
from smvm.errors import AlreadyExists
from smvm.v1 import (
    analysis_service_pb2,
    analysis_service_pb2_grpc,
    competitor_service_pb2,
    competitor_service_pb2_grpc,
    decision_pb2,
    idea_pb2,
    ingestion_service_pb2_grpc,
    memory_grounding_pb2,
    memory_service_pb2_grpc,
    overwatch_service_pb2,
    overwatch_service_pb2_grpc,
    persona_service_pb2,
    persona_service_pb2_grpc,
    run_pb2,
    simulation_pb2,
    simulation_service_pb2,
    simulation_service_pb2_grpc,
)

from services.ingestion.alerts import quality_alert  # pure: what a poor import's alert says
from services.orchestrator import artifact_json, memory_grounding, narrative_tokens, simconfig
from services.orchestrator.callbacks.emitter import CallbackEmitter
from services.orchestrator.documents import RenderQueue
from services.orchestrator.rundir import RunDirectory, iso, utcnow
from services.orchestrator.store import STAGE_WEIGHTS, LeaseLost, RunStore, parse_time, progress_before

# Backoff between attempts at a stage that is UNAVAILABLE.
RETRY_INITIAL_S, RETRY_MAX_S = 0.25, 2.0
# smvm.db.Database's reasons for DatabaseUnavailable, as a stage reports them in its ErrorInfo.
DATABASE_OUTAGE_REASONS = ("DATABASE_UNAVAILABLE", "DATABASE_TIMEOUT")
# How often a run waiting for the database checks whether it is back.
DATABASE_POLL_S = 1.0
RESULT_JSON = "outputs/simulation.result.json"

log = logging.getLogger(__name__)


def to_dict(message) -> dict:
    """`json_format.MessageToDict(message, preserving_proto_field_name=True)` (artifact_json's, faster)."""
    return artifact_json.message_dict(message)


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
            name: open_channel(settings.addr(name), ClientSecurity.from_settings(settings))
            for name in ("ingestion", "personas", "competitors", "simulation", "analysis", "overwatch", "memory")
        }
        self.ingestion = ingestion_service_pb2_grpc.IngestionServiceStub(self._channels["ingestion"])
        self.personas = persona_service_pb2_grpc.PersonaServiceStub(self._channels["personas"])
        self.competitors = competitor_service_pb2_grpc.CompetitorServiceStub(self._channels["competitors"])
        self.simulation = simulation_service_pb2_grpc.SimulationServiceStub(self._channels["simulation"])
        self.analysis = analysis_service_pb2_grpc.AnalysisServiceStub(self._channels["analysis"])
        self.overwatch = overwatch_service_pb2_grpc.OverwatchServiceStub(self._channels["overwatch"])
        self.memory = memory_service_pb2_grpc.MemoryServiceStub(self._channels["memory"])
        self.simulation_replicas = len(addresses_of(settings.simulation_addr))
        # Connect to every replica now, not at the first run: until all are connected, round-robin
        # sends every shard of a fan-out to the first replica that is ready (test_shard_spread.py).
        self._channels["simulation"].get_state(try_to_connect=True)

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
    correlation_id: str = ""


class Pipeline:
    def __init__(self, settings: Settings, store: RunStore, clients: StageClients,
                 callbacks: CallbackEmitter | None = None):
        self.settings = settings
        self.store = store
        self.clients = clients
        # Callbacks to TractionBuild: one update per state change below, alerts where the guide names one.
        self.callbacks = callbacks
        # Report documents of decided runs, rendered a few at a time (documents.py says why).
        self.documents: RenderQueue[RunContext] = RenderQueue(self._render_documents, settings.report_renders)

    def _updates(self, step_name: str = "", decision_doc: dict | None = None):
        """The update callback of a state change, for the store to write in that change's transaction."""
        if self.callbacks is None:
            return ()
        return lambda record: self.callbacks.update_messages(record, step_name=step_name, decision_doc=decision_doc)

    def _update(self, run_id: str, event_type: str, *, step_name: str = "", decision_doc: dict | None = None, **kw):
        """store.update with the change's callback in the same transaction, then wake the dispatcher."""
        record = self.store.update(run_id, event_type, outbox=self._updates(step_name, decision_doc), **kw)
        if self.callbacks is not None:
            self.callbacks.wake()
        return record

    def _alert(self, ctx: RunContext, alert_type: str, severity: str, message: str, details: dict | None = None) -> None:
        """An alert is an event of the run (`alert.<type>`) and its callback, in one transaction."""
        outbox = (() if self.callbacks is None else
                  lambda record: self.callbacks.alert_messages(record, alert_type, severity, message, details))
        self.store.update(ctx.run_id, f"alert.{alert_type}", outbox=outbox,
                          payload={"alert_type": alert_type, "severity": severity, "alert": message})
        if self.callbacks is not None:
            self.callbacks.wake()

    def _finished(self, record) -> None:
        """Metrics of a run that reached its outcome."""
        metrics.RUNS_FINISHED.labels(record.state).inc()
        created = parse_time(record.created_at)
        if created is not None:
            metrics.RUN_DURATION.labels(record.state).observe(max(0.0, (utcnow() - created).total_seconds()))

    # ------------------------------------------------------------------ helpers
    def _start(self, ctx: RunContext, stage: str) -> None:
        record = self.store.get(ctx.run_id)
        results = dict(record.stage_results, **{stage: "in_progress"})
        self._update(
            ctx.run_id, "stage.started", step_name=stage, state="RUNNING", current_stage=stage,
            progress=progress_before(stage), stage_results=results, payload={"stage": stage},
        )

    def _done(self, ctx: RunContext, stage: str, summary: dict, output) -> None:
        """Commit the stage's output with its stage.completed event (one transaction)."""
        record = self.store.get(ctx.run_id)
        results = dict(record.stage_results, **{stage: "completed"})
        self._update(
            ctx.run_id, "stage.completed", step_name=stage, stage_results=results,
            progress=progress_before(stage) + STAGE_WEIGHTS[stage], payload={"stage": stage, **summary},
            stage_output=(stage, output.SerializeToString(deterministic=True)),
        )

    def _committed(self, ctx: RunContext, stage: str, message_type):
        """The stage's committed output (a resumed run), or None when the stage must run."""
        stored = self.store.stage_output(ctx.run_id, stage)
        return None if stored is None else message_type.FromString(stored)

    async def _call(self, ctx: RunContext, stage: str, coro_fn, cap: float):
        """Call a stage with a deadline; retry while it is UNAVAILABLE, within `cap` seconds in all.

        A stage whose own database is down (overwatch's ledger lives in the store's database) is
        the store's outage, not the stage's: the run waits for the database as it does for its own
        writes, then retries with a fresh stage budget."""
        budget_end = time.monotonic() + cap
        delay = RETRY_INITIAL_S
        attempts = 0
        unavailable: grpc.aio.AioRpcError | None = None
        while True:
            attempts += 1
            ends = min(budget_end, ctx.deadline)
            if time.monotonic() >= ctx.deadline:
                raise asyncio.TimeoutError
            try:
                return await coro_fn(max(0.001, ends - time.monotonic()))
            except grpc.aio.AioRpcError as err:
                code = err.code()
                if code == grpc.StatusCode.UNAVAILABLE and database_outage(err):
                    log.warning("run %s waits for the database (stage %s: %s)", ctx.run_id, stage, err.details())
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                    await self._wait_for_database(ctx)
                    budget_end = time.monotonic() + cap
                    continue
                if code == grpc.StatusCode.UNAVAILABLE:
                    unavailable = err
                elif code != grpc.StatusCode.DEADLINE_EXCEEDED or unavailable is None:
                    raise stage_error(ctx, stage, err) from err
                if time.monotonic() + delay >= ends or code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    if ends >= ctx.deadline:
                        raise asyncio.TimeoutError from err
                    raise StageFailed(
                        stage, f"UNAVAILABLE for the whole stage budget of {cap:g}s ({attempts} attempts): "
                        f"{unavailable.details()}",
                    ) from err
                log.warning("stage %s unavailable (attempt %d), retrying in %.2fs: %s", stage, attempts, delay, err.details())
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    # ------------------------------------------------------------------ the run
    async def execute(self, ctx: RunContext) -> None:
        """Run the stages after ingestion; never raises (the outcome lands in the store)."""
        token = correlation.set(ctx.correlation_id or self.store.get(ctx.run_id).correlation_id)
        try:
            if not self.store.stage_output(ctx.run_id, "personas"):  # a fresh run, not a resumed one
                metrics.TOKENS_BUDGETED.inc(ctx.configuration.max_tokens_per_run)
                if ctx.idea.warnings:
                    self._alert(ctx, "quality_warning", "warning", "the idea was accepted with data-quality warnings",
                                {"warnings": list(ctx.idea.warnings)})
                poor_imports = quality_alert(ctx.idea)  # grounding imports of poor quality
                if poor_imports is not None:
                    self._alert(ctx, "quality_warning", poor_imports["severity"], poor_imports["message"],
                                poor_imports["details"])
            while True:
                try:
                    await self._stages(ctx)
                    return
                except DatabaseUnavailable as err:
                    log.warning("run %s waits for the database: %s", ctx.run_id, err)
                    await self._wait_for_database(ctx)
        except LeaseLost as lost:
            log.warning("run %s: %s; this replica stops driving it", ctx.run_id, lost)
        except AlreadyExists as conflict:
            if conflict.reason != "STAGE_ALREADY_COMPLETED":
                raise
            log.warning("run %s: %s (another replica drove it); this replica stops", ctx.run_id, conflict)
        except asyncio.TimeoutError:
            self._fail(ctx, "TIMEOUT", f"run exceeded timeout_seconds={ctx.configuration.timeout_seconds}", "run.timeout")
        except StageFailed as failure:
            self._fail(ctx, "FAILED", str(failure), "run.failed", stage=failure.stage)
        except asyncio.CancelledError:
            # Shutting down: leave the run as it is (RUNNING, outputs committed so far); the next
            # orchestrator to start resumes it from its last completed stage.
            log.info("run %s paused by shutdown; it resumes on the next start", ctx.run_id)
            raise
        except Exception as exc:  # a bug must still end the run visibly, not leave it RUNNING
            log.exception("pipeline crashed")
            self._fail(ctx, "FAILED", f"internal error: {type(exc).__name__}", "run.failed")
        finally:
            correlation.reset(token)

    async def _wait_for_database(self, ctx: RunContext) -> None:
        while not self.store.db.ping():
            if time.monotonic() >= ctx.deadline:
                raise asyncio.TimeoutError
            await asyncio.sleep(DATABASE_POLL_S)

    def _fail(self, ctx: RunContext, state: str, message: str, event: str, stage: str | None = None) -> None:
        try:
            record = self.store.get(ctx.run_id)
            results = dict(record.stage_results)
            failed = stage or record.current_stage
            if failed and results.get(failed) == "in_progress":
                results[failed] = "failed"
            log.warning("run ended %s: %s", state, message)
            record = self._update(ctx.run_id, event, step_name=failed or "", state=state, error=message,
                                  stage_results=results, payload={"error": message})
        except (DatabaseUnavailable, LeaseLost):
            # Left RUNNING in the database; whoever holds (or next takes) its lease resumes it.
            log.exception("could not record the end of run %s", ctx.run_id)
            return
        self._finished(record)
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
        watch = metrics.Stopwatch()  # each step below is one segment of smvm_run_segment_seconds

        personas = self._committed(ctx, "personas", persona_service_pb2.GeneratePersonasResponse)
        if personas is None:
            self._start(ctx, "personas")
            watch.lap("personas.start")
            tokens = await narrative_tokens.reserve(self, ctx)  # the model adapter's tokens, when it is on
            try:
                personas = await self._call(ctx, "personas", lambda t: self.clients.personas.GeneratePersonas(
                    persona_service_pb2.GeneratePersonasRequest(
                        idea=ctx.idea, count=cfg.persona_count, seed=simconfig.stage_seed(ctx.seed, "personas"),
                        narrative_token_allowance=tokens.allowance),
                    timeout=t), cap)
            except Exception as exc:
                await narrative_tokens.release(self, ctx, tokens, f"personas did not finish: {type(exc).__name__}")
                raise
            await narrative_tokens.settle(self, ctx, tokens, personas)
            watch.lap("personas.call")
            rundir.write_json("outputs/personas.output.json", to_dict(personas))
            watch.lap("personas.artifact")
            self._done(ctx, "personas", {"personas": len(personas.personas), "prior": personas.prior,
                                         "bias_passed": personas.bias_report.passed}, personas)
            watch.lap("personas.commit")
            if not personas.bias_report.passed:
                self._alert(ctx, "quality_warning", "warning", "the persona sample failed its bias checks",
                            {"bias_report": to_dict(personas.bias_report)})

        memory = await self._memory_grounding(ctx)
        watch.lap("memory.grounding")
        landscape = self._committed(ctx, "competitors", competitor_service_pb2.BuildLandscapeResponse)
        if landscape is None:
            self._start(ctx, "competitors")
            watch.lap("competitors.start")
            landscape = await self._call(ctx, "competitors", lambda t: self.clients.competitors.BuildLandscape(
                competitor_service_pb2.BuildLandscapeRequest(
                    idea=ctx.idea, count=cfg.competitor_count, seed=simconfig.stage_seed(ctx.seed, "competitors"),
                    known_competitors=memory.known_competitors),
                timeout=t), cap)
            watch.lap("competitors.call")
            rundir.write_json("outputs/competitors.output.json", to_dict(landscape))
            watch.lap("competitors.artifact")
            self._done(ctx, "competitors", {"competitors": len(landscape.competitors), "prior": landscape.prior}, landscape)
            watch.lap("competitors.commit")

        sim_config = self._simulation_config(ctx, personas, landscape)
        result = self._committed(ctx, "simulation", simulation_pb2.SimulationResult)
        simulated = result is None
        if simulated:
            self._start(ctx, "simulation")
            watch.lap("simulation.start")
            rundir.write_json("outputs/simulation.config.json", to_dict(sim_config))
            watch.lap("simulation.config_artifact")
            reservation = await self._reserve_budget(ctx, sim_config)
            watch.lap("simulation.budget_reserve")
            try:
                result = await self._call(
                    ctx, "simulation", lambda t: self._simulate(ctx, sim_config, t), self.settings.simulation_timeout_s)
            except Exception as exc:
                # Not on cancellation (shutdown): the run resumes later and settles this same reservation
                # (ReserveBudget replays it for the run); if it never does, the reservation expires.
                await self._release_budget(ctx, reservation.reservation_id, f"simulation did not finish: {type(exc).__name__}")
                raise
            watch.lap("simulation.run")
            settled = await self._call(ctx, "simulation", lambda t: self.clients.overwatch.CommitBudget(
                overwatch_service_pb2.CommitBudgetRequest(
                    reservation_id=reservation.reservation_id,
                    actual=overwatch_service_pb2.ResourceAmounts(
                        utility_evaluations=result.utility_evaluations, cpu_seconds=result.kernel_seconds)),
                timeout=t), cap)
            watch.lap("simulation.budget_commit")
            self._done(ctx, "simulation", {"iterations": result.iterations,
                                           "utility_evaluations": result.utility_evaluations,
                                           "kernel_seconds": round(result.kernel_seconds, 4),
                                           "budget_warnings": [*reservation.warnings, *settled.warnings]}, result)
            watch.lap("simulation.commit")
            metrics.UTILITY_EVALUATIONS.inc(result.utility_evaluations)
            metrics.SIMULATION_ITERATIONS.inc(result.iterations)
            if settled.warnings and not reservation.warnings:  # the spend crossed 80 % though the hold did not
                self._alert(ctx, "resource_constraint", "warning", "; ".join(settled.warnings),
                            {"warnings": list(settled.warnings)})

        # simulation.result.json (2.9 M characters for a default run) is spelled in a worker thread
        # while the analysis runs, and DECISION_READY waits for it (GET /results reads it). It is
        # written after the commit, so it always matches the committed result; a run resumed after a
        # crash in between (no digest recorded) writes it then.
        result_json = None
        if simulated or self.store.artifact_digest(ctx.run_id, RESULT_JSON) is None:
            result_json = write_in_background(rundir, RESULT_JSON, without_swing_paths(result))
        watch.lap("simulation.result_artifact")
        analysis = self._committed(ctx, "analysis", analysis_service_pb2.AnalyzeResponse)
        if analysis is None:
            # The decision without the chart documents: they are rendered after DECISION_READY.
            decide_only = self._analyze_request(ctx, personas, landscape, sim_config, result, memory)
            decide_only.skip_documents = True
            watch.lap("analysis.request")
            self._start(ctx, "analysis")
            watch.lap("analysis.start")
            analysis = await self._call(ctx, "analysis", lambda t: self.clients.analysis.Analyze(decide_only, timeout=t), cap)
            watch.lap("analysis.call")
            rundir.write_text("reports/validation_report.md", analysis.report_markdown)
            watch.lap("analysis.artifact")
            decision = analysis.decision
            self._done(ctx, "analysis", {
                "recommendation": short_enum(decision_pb2.Recommendation.Name(decision.recommendation), "RECOMMENDATION_"),
                "confidence": round(decision.confidence, 4), "composite_score": round(decision.composite_score, 2)},
                analysis)
            watch.lap("analysis.commit")
        decision = analysis.decision
        recommendation = short_enum(decision_pb2.Recommendation.Name(decision.recommendation), "RECOMMENDATION_")

        review_response = self._committed(ctx, "overwatch", overwatch_service_pb2.ReviewDecisionResponse)
        if review_response is None:
            self._start(ctx, "overwatch")
            watch.lap("overwatch.start")
            review_response = await self._call(ctx, "overwatch", lambda t: self.clients.overwatch.ReviewDecision(
                overwatch_service_pb2.ReviewDecisionRequest(
                    run_id=ctx.run_id, project_id=ctx.project_id, idea=ctx.idea, decision=decision,
                    bias_report=personas.bias_report, personas=personas.personas,
                    simulation=without_samples(result), planned_iterations=sim_config.iterations),
                timeout=t), cap)
            watch.lap("overwatch.call")
            review = review_response.review
            verdict = short_enum(decision_pb2.ReviewVerdict.Name(review.verdict), "REVIEW_VERDICT_")
            decision_doc = decision_output(ctx, decision, review, recommendation, verdict)
            rundir.write_json("outputs/decision.output.json", decision_doc)
            summary = validation_summary(ctx, decision_doc, result, personas, landscape)
            if analysis.summary_json:
                summary["analysis"] = json.loads(analysis.summary_json)
            rundir.write_json("reports/validation_summary.json", summary)
            watch.lap("overwatch.artifacts")
            self._done(ctx, "overwatch", {"verdict": verdict, "reasons": decision_doc["review"]["reasons"],
                                          "policy_version": review.policy_version, "released": decision_doc["released"]},
                       review_response)
            watch.lap("overwatch.commit")
        verdict = short_enum(decision_pb2.ReviewVerdict.Name(review_response.review.verdict), "REVIEW_VERDICT_")
        if result_json is not None:
            await result_json
            watch.lap("simulation.result_artifact_wait")
        decision_doc = rundir.read_json("outputs/decision.output.json")
        record = self._update(
            ctx.run_id, "run.decision_ready", step_name="overwatch", decision_doc=decision_doc,
            state="DECISION_READY", current_stage="", progress=1.0, recommendation=recommendation, review_verdict=verdict,
            payload={"recommendation": recommendation, "confidence": decision.confidence, "verdict": verdict},
        )
        self._finished(record)
        watch.lap("run.decision_ready")
        if recommendation == "KILL" or verdict == "VETO":
            self._alert(ctx, "risk_escalation", "critical" if verdict == "VETO" else "warning",
                        f"recommendation {recommendation}, overwatch verdict {verdict}",
                        {"recommendation": recommendation, "verdict": verdict,
                         "reasons": [r.code for r in review_response.review.reasons],
                         "critical_success_factors": list(decision.critical_success_factors)})
        self.documents.submit(ctx)  # this task ends here and frees the stage messages above

    def _simulation_config(self, ctx: RunContext, personas, landscape) -> simulation_pb2.SimulationConfig:
        """Deterministic from the committed outputs, so a resumed run rebuilds the same config."""
        return simconfig.build_simulation_config(
            sam_usd=ctx.idea.market_size.sam_usd, personas=personas, landscape=landscape,
            configuration=ctx.configuration, seed=simconfig.stage_seed(ctx.seed, "simulation"),
            max_utility_evaluations=self.settings.max_utility_evaluations,
        )

    @staticmethod
    def _analyze_request(ctx: RunContext, personas, landscape, sim_config, result,
                         memory: memory_grounding_pb2.MemoryGrounding | None) -> analysis_service_pb2.AnalyzeRequest:
        return analysis_service_pb2.AnalyzeRequest(
            idea=ctx.idea, personas=personas.personas, competitors=landscape.competitors,
            our_offering=landscape.our_offering, simulation_config=sim_config, simulation=result,
            bias_report=personas.bias_report,
            cost_overrides=ctx.idea.cost_overrides if ctx.idea.HasField("cost_overrides") else None, memory=memory)

    async def _render_documents(self, ctx: RunContext) -> None:
        """The HTML and PDF reports with their charts, after the decision is out (they take about ten
        times the decision's time; `documents` runs a few at a time). The request is rebuilt from the
        committed stage outputs. A failure is recorded and leaves the run's outcome alone."""
        token = correlation.set(ctx.correlation_id)
        watch = metrics.Stopwatch()
        try:
            personas = self._committed(ctx, "personas", persona_service_pb2.GeneratePersonasResponse)
            landscape = self._committed(ctx, "competitors", competitor_service_pb2.BuildLandscapeResponse)
            result = self._committed(ctx, "simulation", simulation_pb2.SimulationResult)
            memory = self._committed(ctx, "memory", memory_grounding_pb2.MemoryGrounding)  # None before grounding existed
            request = self._analyze_request(ctx, personas, landscape, self._simulation_config(ctx, personas, landscape),
                                            result, memory)
            del personas, landscape, result, memory
            watch.lap("documents.request")
            answer = await self.clients.analysis.Analyze(request, timeout=max(1.0, self.settings.stage_timeout_s))
            del request
            watch.lap("documents.call")
            rundir = self.store.rundir(ctx.run_id)
            await asyncio.to_thread(rundir.write_text, "reports/validation_report.html", answer.report_html)
            await asyncio.to_thread(rundir.write_bytes, "reports/analysis_report.pdf", answer.report_pdf)
            watch.lap("documents.artifacts")
            self.store.update(ctx.run_id, "reports.rendered", payload={
                "files": ["reports/validation_report.html", "reports/analysis_report.pdf"],
                "pdf_bytes": len(answer.report_pdf)})
            watch.lap("documents.commit")
        except Exception as exc:  # best effort after the decision: never turns a decided run into a failed one
            log.warning("reports of run %s not rendered: %s", ctx.run_id, exc)
            with contextlib.suppress(Exception):
                self.store.update(ctx.run_id, "reports.failed", payload={"error": f"{type(exc).__name__}: {exc}"[:500]})
        finally:
            correlation.reset(token)


    # ------------------------------------------------------------------ memory (services/orchestrator/memory_grounding.py)
    async def _memory_grounding(self, ctx: RunContext) -> memory_grounding_pb2.MemoryGrounding:
        """What memory knew for this run: committed before the competitors stage (a resumed run reads
        it back), asked within `memory_timeout_s`; memory down or slow gives an "unavailable" grounding
        and a memory.unavailable event, and the run goes on without it."""
        committed = self._committed(ctx, "memory", memory_grounding_pb2.MemoryGrounding)
        if committed is not None:
            return committed
        timeout = max(0.001, min(self.settings.memory_timeout_s, ctx.deadline - time.monotonic()))
        grounding = await memory_grounding.ground(self.clients.memory, run_id=ctx.run_id, project_id=ctx.project_id,
                                                  idea=ctx.idea, timeout_s=timeout)
        if grounding.status == "used":
            event, payload = "memory.grounded", {
                "known_competitors": len(grounding.known_competitors),
                "similar_ideas": [i.run_id for i in grounding.similar_ideas],
                "decision_history": [d.run_id for d in grounding.decision_history]}
        else:
            log.warning("run %s goes on without memory grounding: %s", ctx.run_id, grounding.error)
            event, payload = "memory.unavailable", {"error": grounding.error, "warning": (
                "memory unavailable: the run is decided without learned competitors, similar ideas or decision history")}
        self.store.update(ctx.run_id, event, payload={"memory_status": grounding.status, **payload},
                          stage_output=("memory", grounding.SerializeToString(deterministic=True)))
        return grounding

    # ------------------------------------------------------------------ budget (overwatch's ledger)
    async def _reserve_budget(self, ctx: RunContext, sim_config) -> overwatch_service_pb2.ReserveBudgetResponse:
        """Hold the simulation's compute before it starts: RESOURCE_EXHAUSTED fails the run here, never
        half-way. A reservation near a ceiling comes back with the guide's resource_constraint alerts."""
        reservation = await self._call(ctx, "simulation", lambda t: self.clients.overwatch.ReserveBudget(
            overwatch_service_pb2.ReserveBudgetRequest(
                run_id=ctx.run_id, project_id=ctx.project_id, purpose="simulation",
                requested=overwatch_service_pb2.ResourceAmounts(
                    utility_evaluations=planned_utility_evaluations(sim_config)),
                max_tokens_per_run=ctx.configuration.max_tokens_per_run,
                max_utility_evaluations=self.settings.max_utility_evaluations,
                ttl_seconds=max(0.0, ctx.deadline - time.monotonic()) + 60.0),
            timeout=t), self.settings.stage_timeout_s)
        self.store.update(ctx.run_id, "budget.reserved", payload={
            "reservation_id": reservation.reservation_id, "utilisation": round(reservation.utilisation, 4),
            "warnings": list(reservation.warnings)})
        if reservation.warnings:
            self._alert(ctx, "resource_constraint", "warning", "; ".join(reservation.warnings),
                        {"utilisation": reservation.utilisation, "warnings": list(reservation.warnings)})
        return reservation

    async def _release_budget(self, ctx: RunContext, reservation_id: str, reason: str) -> None:
        """Give an unspent reservation back; a failure here only delays it until the reservation expires."""
        try:
            remaining = max(1.0, min(self.settings.stage_timeout_s, ctx.deadline - time.monotonic()))
            await self.clients.overwatch.ReleaseBudget(
                overwatch_service_pb2.ReleaseBudgetRequest(reservation_id=reservation_id, reason=reason), timeout=remaining)
        except grpc.aio.AioRpcError as err:
            log.warning("could not release budget reservation %s: %s", reservation_id, err.code().name)

    async def _simulate(self, ctx: RunContext, config: simulation_pb2.SimulationConfig, timeout: float) -> simulation_pb2.SimulationResult:
        """One attempt at the simulation stage (all shards and the merge) within `timeout` seconds."""
        shards = self.settings.simulation_shards or self.clients.simulation_replicas
        chunk = config.chunk_iterations or simconfig.CHUNK_ITERATIONS
        n_chunks = math.ceil(config.iterations / chunk)
        shards = max(1, min(shards, n_chunks))
        ends = time.monotonic() + timeout
        base = progress_before("simulation")
        weight = STAGE_WEIGHTS["simulation"]
        done = [0.0] * shards
        counts = [n_chunks] if shards == 1 else [count for _, count in split_chunks(n_chunks, shards)]

        def tick(i: int, progress: simulation_pb2.SimulationProgress) -> None:
            # chunks_total counts the swings' chunks too: scale the fraction to the shard's base chunks
            done[i] = progress.fraction * counts[i]
            self.store.set_progress(ctx.run_id, base + weight * sum(done) / n_chunks)

        if shards == 1:
            result = None
            call = self.clients.simulation.RunSimulation(
                simulation_service_pb2.RunSimulationRequest(config=config), timeout=_left(ends))
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
                timeout=_left(ends))
            shard = None
            async for message in call:
                if message.HasField("progress"):
                    tick(i, message.progress)
                elif message.HasField("shard"):
                    shard = message.shard
            if shard is None:
                raise StageFailed("simulation", f"shard {i} ended without a result")
            return shard

        tasks = [asyncio.ensure_future(run_shard(i, s, c)) for i, (s, c) in enumerate(bounds)]
        try:
            parts = await asyncio.gather(*tasks)
        except BaseException:
            # One shard failed: stop the others before the stage is retried (no orphaned work).
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        merged = await self.clients.simulation.MergeShards(
            simulation_service_pb2.MergeShardsRequest(config=config, shards=parts), timeout=_left(ends))
        return merged.result


def _left(ends: float) -> float:
    return max(0.001, ends - time.monotonic())


def database_outage(err: grpc.aio.AioRpcError) -> bool:
    """Whether a stage's UNAVAILABLE says that its database is down (smvm.db.DatabaseUnavailable)."""
    try:
        rich = rpc_status.from_call(err)
    except ValueError:  # a status message that contradicts the call's code: not ours
        return False
    for detail in rich.details if rich is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.reason in DATABASE_OUTAGE_REASONS:
            return True
    return False


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
    """Utility evaluations a config will do: customers x offerings (ours + competitors) x price points,
    for the base iterations and each sensitivity swing's re-simulated ones."""
    offerings = 1 + len(config.competitors)
    iterations = config.iterations + simconfig.swing_iterations(config)
    return iterations * simconfig.customers_per_iteration(config) * offerings * max(1, len(config.price_grid))


def write_in_background(rundir: RunDirectory, relative: str, message) -> asyncio.Future:
    """Write `message` as the run directory's JSON artifact `relative` in a worker thread. The caller
    awaits the future before the state that promises the file, where a failure is raised; a failure
    is also logged, so that one nobody awaits any more (the run failed first) is not lost."""
    future = asyncio.ensure_future(asyncio.to_thread(lambda: rundir.write_json(relative, to_dict(message))))

    def unawaited_failure(done: asyncio.Future) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.warning("could not write %s of run %s: %s", relative, rundir.run_id, done.exception())

    future.add_done_callback(unawaited_failure)
    return future


def without_samples(result: simulation_pb2.SimulationResult) -> simulation_pb2.SimulationResult:
    slim = without_swing_paths(result)
    del slim.samples[:]
    return slim


def without_swing_paths(result: simulation_pb2.SimulationResult) -> simulation_pb2.SimulationResult:
    """The result with each sensitivity swing's summary but not its per-iteration paths (3 MB of
    packed float64 for a default run, base64 in JSON). The committed stage output keeps them: the
    analysis and a resumed run read that."""
    slim = simulation_pb2.SimulationResult()
    slim.CopyFrom(result)
    for swing in slim.swings:
        for name in ("monthly_customers_f64", "churn_f64", "demand_share_f64", "final_share_f64"):
            swing.ClearField(name)
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
