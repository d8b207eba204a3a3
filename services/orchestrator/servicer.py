"""ValidationService: the gRPC face of the REST API, over the run store and the pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import platform
import socket
import time

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from smvm import __version__, correlation
from smvm.config import Settings
from smvm.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from smvm.ids import check_id, new_run_id, run_id_from, validation_id
from smvm.server import ServiceHost
from smvm.v1 import (
    decision_pb2,
    delivery_service_pb2 as dpb,
    delivery_service_pb2_grpc as dgrpc,
    idea_pb2,
    ingestion_service_pb2,
    market_pb2,
    run_pb2,
    run_watch_service_pb2 as wpb,
    run_watch_service_pb2_grpc as wgrpc,
    simulation_pb2,
    validation_service_pb2 as vpb,
    validation_service_pb2_grpc as vgrpc,
)

from services.orchestrator import simconfig
from services.orchestrator.callbacks import payloads as callback_payloads, urls as callback_urls
from services.orchestrator.callbacks.service import Callbacks, DeliveryServicer
from services.orchestrator.idempotency import IdempotencyKey
from services.orchestrator.pipeline import Pipeline, RunContext, StageClients, to_dict
from services.orchestrator.rundir import RunDirectory, iso, json_bytes, utcnow
from services.orchestrator.run_watch import RunFeed, RunWatchServicer
from services.orchestrator.status_view import StatusView
from services.orchestrator.store import RunRecord, RunStore, parse_time

log = logging.getLogger(__name__)

# (field, default, minimum, maximum) of RunConfiguration; 0 means "use the default".
_LIMITS = {
    "persona_count": (simconfig.DEFAULTS["persona_count"], 1, 20),
    "competitor_count": (simconfig.DEFAULTS["competitor_count"], 1, 50),
    "timeout_seconds": (simconfig.DEFAULTS["timeout_seconds"], 1, 86_400),
    "months": (simconfig.DEFAULTS["months"], 1, 120),
    "price_points": (simconfig.DEFAULTS["price_points"], 2, 200),
}
READY_STATES = ("DECISION_READY", "COMPLETED")


SHUTDOWN_CANCEL_S = 5.0  # how long shutdown keeps cancelling run tasks that have not stopped


class _AlreadyDone(Exception):
    """A guarded update found that another request had already made this change."""
# Expired keys are as good as absent already (lookups skip them); the purge only reclaims the rows.
IDEMPOTENCY_PURGE_INTERVAL_S = 3600.0


def _ts(value: str) -> timestamp_pb2.Timestamp | None:
    parsed = parse_time(value)
    if parsed is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(parsed)
    return ts


def status_message(record: RunRecord, run_directory: str) -> run_pb2.RunStatus:
    status = run_pb2.RunStatus(
        run_id=record.run_id,
        validation_id=validation_id(record.run_id),
        project_id=record.project_id,
        state=run_pb2.RunState.Value(f"RUN_STATE_{record.state}"),
        current_stage=record.current_stage,
        progress=record.progress,
        stage_results=record.stage_results,
        error=record.error,
        run_directory=run_directory,
        correlation_id=record.correlation_id,
        recommendation=record.recommendation,
        manual_review_required=record.state in callback_payloads.MANUAL_REVIEW_STATES,
    )
    for field in ("created_at", "updated_at", "estimated_completion", "completed_at", "finalized_at"):
        ts = _ts(getattr(record, field))
        if ts is not None:
            getattr(status, field).CopyFrom(ts)
    return status


def normalise_configuration(cfg: run_pb2.RunConfiguration, settings: Settings) -> run_pb2.RunConfiguration:
    """Fill defaults and check ranges, naming the offending field."""
    out = run_pb2.RunConfiguration()
    out.CopyFrom(cfg)
    iterations = cfg.simulation_iterations or simconfig.DEFAULTS["simulation_iterations"]
    if not 1 <= iterations <= settings.max_iterations:
        raise InvalidArgument("configuration.simulation_iterations", f"must be between 1 and {settings.max_iterations}")
    out.simulation_iterations = iterations
    for field, (default, low, high) in _LIMITS.items():
        value = getattr(cfg, field) or default
        if not low <= value <= high:
            raise InvalidArgument(f"configuration.{field}", f"must be between {low} and {high}")
        setattr(out, field, value)
    if cfg.max_tokens_per_run < 0:
        raise InvalidArgument("configuration.max_tokens_per_run", "must not be negative")
    out.max_tokens_per_run = cfg.max_tokens_per_run or simconfig.DEFAULTS["max_tokens_per_run"]
    return out


def check_callback_url(field: str, url: str, settings: Settings | None = None) -> str:
    """A callback URL SMVM may call (http(s), no credentials; outside dev an allow-listed host)."""
    if settings is None:
        return callback_urls.check_callback_url(field, url)
    return callback_urls.check_callback_url(
        field, url, profile=settings.profile, allow_list=callback_urls.parse_allow_list(settings.callback_allowed_hosts)
    )


def _correlation_of(request: vpb.SubmitRunRequest) -> str:
    """The run's correlation id: the body's (the guide's T0 shape carries one), else the call's."""
    if request.correlation_id:
        if not correlation.is_valid(request.correlation_id):
            raise InvalidArgument("correlation_id", "must match [A-Za-z0-9._:-]{1,128}")
        return request.correlation_id
    return correlation.get() or correlation.new_id()


def pseudonym(identity: str) -> str:
    """A stable stand-in for a person's identifier, so audit trails link actions without storing PII."""
    if not identity:
        return ""
    return "user:" + hashlib.sha256(identity.strip().lower().encode()).hexdigest()[:16]


def request_digest(request: vpb.SubmitRunRequest) -> str:
    """Digest of what a submission asks for; the correlation id, timestamps and the Idempotency-Key do not count."""
    copy = vpb.SubmitRunRequest()
    copy.CopyFrom(request)
    copy.correlation_id = ""
    copy.metadata.initiated_at = ""
    copy.idempotency_key = copy.idempotency_scope = ""
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


class ValidationServicer(vgrpc.ValidationServiceServicer):
    def __init__(self, settings: Settings, store: RunStore, clients: StageClients, callbacks: Callbacks | None = None):
        self.settings = settings
        self.store = store
        self.clients = clients
        self.callbacks = callbacks
        self.pipeline = Pipeline(settings, store, clients, callbacks.emitter if callbacks is not None else None)
        self._tasks: set[asyncio.Task] = set()
        self._closing = False  # set by shutdown(): no new pipeline task may start
        self.status_view = StatusView(store, status_message)

    # ------------------------------------------------------------------ callbacks (transactional outbox)
    def _updates(self, **kwargs):
        """The update callback of a state change, built from the changed record inside its transaction."""
        if self.callbacks is None:
            return ()
        return lambda record: self.callbacks.emitter.update_messages(record, **kwargs)

    def _wake(self) -> None:
        if self.callbacks is not None:
            self.callbacks.emitter.wake()

    # ------------------------------------------------------------------ lifecycle
    def recover(self) -> None:
        """Start-up: resume every unfinished run no live replica drives, from its last completed stage,
        and queue the report documents of decided runs that a stop left unrendered."""
        for record in self.store.load():
            self._adopt(record)
        try:
            undocumented = self.store.undocumented()
        except Exception:  # documents are best effort: never a reason not to start
            log.exception("cannot list the decided runs whose reports are missing")
            undocumented = []
        for record in undocumented:
            try:
                self.pipeline.documents.submit(self._resume_context(record))
            except Exception:  # its decision stands; GetRunReport keeps saying the documents are missing
                log.exception("cannot queue the reports of run %s", record.run_id)

    def adopt_orphans(self) -> None:
        """Periodic: resume active runs whose replica died (their lease expired)."""
        for record in self.store.orphaned():
            if not any(t.get_name() == f"run:{record.run_id}" for t in self._tasks):
                self._adopt(record)

    async def keep_leases(self) -> None:
        """Renew this replica's leases and adopt orphaned runs, every third of the lease."""
        while True:
            await asyncio.sleep(self.store.lease_s / 3)
            try:
                self.store.renew_leases()
                self.adopt_orphans()
            except Exception:  # the database may be down: try again next round
                log.exception("lease round failed")

    async def purge_idempotency_keys(self) -> None:
        """Delete expired Idempotency-Keys at start-up and every IDEMPOTENCY_PURGE_INTERVAL_S."""
        while True:
            try:
                purged = self.store.idempotency.purge_expired(self.store.db)
                if purged:
                    log.info("purged %d expired idempotency keys", purged)
            except Exception:  # the database may be down: try again next round
                log.exception("idempotency key purge failed")
            await asyncio.sleep(IDEMPOTENCY_PURGE_INTERVAL_S)

    def _adopt(self, record: RunRecord) -> None:
        if self.store.owner and not self.store.claim(record.run_id):
            log.info("run %s is driven by another replica", record.run_id)
            return
        try:
            ctx = self._resume_context(record)
        except Exception as exc:  # nothing to resume from: end the run visibly, never leave it RUNNING
            log.exception("cannot resume run %s", record.run_id)
            self.store.update(
                record.run_id, "run.failed", state="FAILED",
                error=f"interrupted: the orchestrator restarted and the run cannot be resumed ({exc}); "
                "resubmit with a new run_id",
                payload={"reason": "orchestrator_restart"}, outbox=self._updates(step_name=record.current_stage),
            )
            self._wake()
            return
        done = [s for s, state in record.stage_results.items() if state == "completed"]
        self.store.update(record.run_id, "run.resumed", payload={"completed_stages": done})
        log.info("resuming run %s after %s", record.run_id, done[-1] if done else "nothing")
        self._launch(ctx)

    def _resume_context(self, record: RunRecord) -> RunContext:
        stored = self.store.stage_output(record.run_id, "ingestion")
        if stored is not None:
            idea = idea_pb2.Idea.FromString(stored)
        else:  # a run from before the database kept stage outputs
            idea = json_format.ParseDict(self.store.rundir(record.run_id).read_json("idea.input.json")["idea"], idea_pb2.Idea())
        configuration = json_format.ParseDict(record.configuration, run_pb2.RunConfiguration())
        # The run's deadline is wall-clock from its creation: time spent down counts against it.
        created = parse_time(record.created_at)
        remaining = created.timestamp() + record.timeout_seconds - time.time()
        return RunContext(
            run_id=record.run_id, project_id=record.project_id, idea=idea, configuration=configuration,
            seed=record.seed, deadline=time.monotonic() + remaining, correlation_id=record.correlation_id,
        )

    def _launch(self, ctx: RunContext) -> None:
        if self._closing:
            # A SubmitRun still in flight when shutdown began: the run is stored, so the next
            # orchestrator to start resumes it; a task started now would outlive the shutdown.
            log.info("run %s accepted during shutdown; it starts when an orchestrator next starts", ctx.run_id)
            if self.store.owner:
                with contextlib.suppress(Exception):  # else the lease expires on its own
                    self.store.release_leases()  # so another live replica adopts it at once
            return
        task = asyncio.create_task(self.pipeline.execute(ctx), name=f"run:{ctx.run_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        self._closing = True
        # Cancel until they are gone: a task can swallow one cancellation (asyncio.wait_for in 3.11
        # does when its inner call finishes at the same moment), and waiting on it once would then
        # wait for the whole run, past the pod's termination grace.
        deadline = time.monotonic() + SHUTDOWN_CANCEL_S
        while self._tasks and time.monotonic() < deadline:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.wait(list(self._tasks), timeout=0.2)
        if self._tasks:
            log.warning("%d run tasks did not stop; their runs resume on the next start", len(self._tasks))
        await self.pipeline.documents.close()
        if self.store.owner:
            try:
                self.store.release_leases()
            except Exception:  # leases then expire on their own
                log.exception("could not release leases")

    # ------------------------------------------------------------------ RPCs
    async def SubmitRun(self, request: vpb.SubmitRunRequest, context) -> vpb.SubmitRunResponse:
        project_id = check_id("project_id", request.project_id)
        if request.run_id:
            check_id("run_id", request.run_id)
        has_idea, has_business = request.HasField("idea"), request.HasField("business_idea")
        if has_idea == has_business:
            raise InvalidArgument(
                "business_idea" if not has_idea else "idea",
                "exactly one of `idea` or `business_idea` is required",
            )
        configuration = normalise_configuration(request.configuration, self.settings)
        callback_url = check_callback_url("callback_url", request.callback_url, self.settings) or check_callback_url(
            "metadata.callback_url", request.metadata.callback_url, self.settings
        )
        digest = request_digest(request)
        key = IdempotencyKey.of(request.idempotency_scope, request.idempotency_key)
        if (earlier := self._earlier_answer(request.run_id, key, digest)) is not None:
            return earlier

        shape = "idea" if has_idea else "business_idea"
        normalize = ingestion_service_pb2.NormalizeIdeaRequest(**{shape: getattr(request, shape)})
        try:
            idea = (await self.clients.ingestion.NormalizeIdea(normalize, timeout=self.settings.stage_timeout_s)).idea
        except grpc.aio.AioRpcError as err:
            # Pass the stage's verdict (and its field details) through unchanged.
            await context.abort(err.code(), err.details(), tuple(err.trailing_metadata() or ()))

        async with self.store.lock:
            if (earlier := self._earlier_answer(request.run_id, key, digest)) is not None:
                return earlier
            run_id = request.run_id or new_run_id()
            now = utcnow()
            seed = configuration.seed if configuration.HasField("seed") else simconfig.root_seed(project_id, run_id)
            configuration.seed = seed
            estimate = min(configuration.timeout_seconds, 120)
            record = RunRecord(
                run_id=run_id,
                project_id=project_id,
                state="INITIATED",
                created_at=iso(now),
                updated_at=iso(now),
                estimated_completion=iso(now.fromtimestamp(now.timestamp() + estimate, now.tzinfo)),
                request_sha256=digest,
                correlation_id=_correlation_of(request),
                seed=seed,
                source_shape=shape,
                initiated_by=pseudonym(request.metadata.initiated_by),
                callback_url=callback_url,
                timeout_seconds=configuration.timeout_seconds,
                configuration=json_format.MessageToDict(configuration, preserving_proto_field_name=True),
            )
            record.stage_results["ingestion"] = "completed"
            record.progress = 0.05
            rundir = RunDirectory(self.settings.runs_dir, project_id, run_id)
            response = self._submit_response(record, rundir, idea)
            record.submit_response = json_format.MessageToDict(response, preserving_proto_field_name=True)
            try:
                self.store.create(
                    record, rundir, actor=record.initiated_by or "tractionbuild",
                    stage_outputs={"ingestion": idea.SerializeToString(deterministic=True)},
                    outbox=self._updates(step_name="ingestion"), idempotency_key=key,
                )
            except AlreadyExists:
                # Another replica created this run_id or took this key since the check above.
                if (earlier := self._earlier_answer(request.run_id, key, digest)) is not None:
                    return earlier
                raise
            rundir.write_json("idea.input.json", {"source_shape": shape, "idea": to_dict(idea)})
        self._wake()
        self._launch(RunContext(
            run_id=run_id, project_id=project_id, idea=idea, configuration=configuration, seed=seed,
            deadline=time.monotonic() + configuration.timeout_seconds, correlation_id=record.correlation_id,
        ))
        return response

    def _earlier_answer(self, run_id: str, key: IdempotencyKey | None, digest: str) -> vpb.SubmitRunResponse | None:
        """The answer a retry of an earlier submission gets, by Idempotency-Key first, then by run_id
        (ALREADY_EXISTS when the earlier request differs); None for a new submission."""
        answer = None
        if key is not None and (keyed := self.store.keyed_answer(key)) is not None:
            answer = keyed.check(digest)
        elif run_id and (existing := self.store.find(run_id)) is not None:
            if existing.request_sha256 != digest:
                raise AlreadyExists(f"run {existing.run_id} already exists with different content", reason="RUN_ID_CONFLICT")
            answer = existing.submit_response
        if answer is None:
            return None
        response = json_format.ParseDict(answer, vpb.SubmitRunResponse())
        response.replayed = True
        return response

    def _submit_response(self, record: RunRecord, rundir: RunDirectory, idea: idea_pb2.Idea) -> vpb.SubmitRunResponse:
        base = self.settings.public_base_url.rstrip("/")
        return vpb.SubmitRunResponse(
            run_id=record.run_id,
            validation_id=validation_id(record.run_id),
            project_id=record.project_id,
            status=run_pb2.RUN_STATE_INITIATED,
            estimated_completion=_ts(record.estimated_completion),
            run_directory=str(rundir.path),
            validation_results=vpb.ValidationResults(
                schema_compliance="passed",
                business_logic_check="passed_with_warnings" if idea.warnings else "passed",
                risk_assessment="pending_simulation",
                recommendations=list(idea.warnings),
            ),
            webhook_urls=vpb.WebhookUrls(
                status_updates=f"{base}/api/v1/validation/{record.run_id}/status",
                completion=f"{base}/api/v1/validation/{record.run_id}/results",
            ),
            metadata=vpb.ResponseMetadata(
                created_at=_ts(record.created_at), python_version=platform.python_version(), smvm_version=__version__
            ),
            correlation_id=record.correlation_id,
        )

    def _record(self, any_id: str) -> RunRecord:
        return self.store.get(check_id("run_id", run_id_from(any_id)))

    def _status(self, record: RunRecord) -> run_pb2.RunStatus:
        return status_message(record, str(self.store.run_path(record)))

    async def GetRunStatus(self, request, context) -> vpb.GetRunStatusResponse:
        return self.status_view.response(check_id("run_id", run_id_from(request.run_id)))

    async def GetRunResults(self, request, context) -> vpb.GetRunResultsResponse:
        record = self._record(request.run_id)
        # A run that timed out answers with the partial results it has (its status says manual review).
        partial = record.state in callback_payloads.MANUAL_REVIEW_STATES
        if record.state not in READY_STATES and not partial:
            detail = f" ({record.error})" if record.error else ""
            raise FailedPrecondition(f"run {record.run_id} has no results: status {record.state}{detail}", reason="NOT_READY")
        rundir = self.store.rundir(record.run_id)
        response = vpb.GetRunResultsResponse(status=self._status(record))
        if rundir.has("outputs/decision.output.json"):
            decision_doc = rundir.read_json("outputs/decision.output.json")
            json_format.ParseDict(decision_doc["decision"], response.decision)
            response.review.verdict = decision_pb2.ReviewVerdict.Value(f"REVIEW_VERDICT_{decision_doc['review']['verdict']}")
            for reason in decision_doc["review"]["reasons"]:
                json_format.ParseDict(reason, response.review.reasons.add())
            response.review.policy_version = decision_doc["review"].get("policy_version", "")
        json_format.ParseDict(rundir.read_json("idea.input.json")["idea"], response.idea)
        if rundir.has("outputs/personas.output.json"):
            personas = rundir.read_json("outputs/personas.output.json")
            for persona in personas.get("personas", []):
                json_format.ParseDict(persona, response.personas.add(), ignore_unknown_fields=True)
            json_format.ParseDict(personas.get("bias_report", {}), response.bias_report, ignore_unknown_fields=True)
        if rundir.has("outputs/competitors.output.json"):
            for competitor in rundir.read_json("outputs/competitors.output.json").get("competitors", []):
                json_format.ParseDict(competitor, response.competitors.add(), ignore_unknown_fields=True)
        if rundir.has("outputs/simulation.result.json"):
            simulation = rundir.read_json("outputs/simulation.result.json")
            simulation.pop("samples", None)
            json_format.ParseDict(simulation, response.simulation, ignore_unknown_fields=True)
        if rundir.has("outputs/completion.json"):
            json_format.ParseDict(rundir.read_json("outputs/completion.json")["results"], response.completion_results)
        return response

    REPORT_FILES = {
        "html": ("reports/validation_report.html", "text/html; charset=utf-8"),
        "markdown": ("reports/validation_report.md", "text/markdown; charset=utf-8"),
        "pdf": ("reports/analysis_report.pdf", "application/pdf"),
    }

    async def GetRunReport(self, request: vpb.GetRunReportRequest, context) -> vpb.GetRunReportResponse:
        fmt = (request.format or "html").lower()
        if fmt not in self.REPORT_FILES:
            raise InvalidArgument("format", f"must be one of {', '.join(self.REPORT_FILES)}, got {request.format!r}")
        record = self._record(request.run_id)
        if record.state not in READY_STATES:
            raise FailedPrecondition(f"run {record.run_id} has no report: status {record.state}", reason="NOT_READY")
        relative, content_type = self.REPORT_FILES[fmt]
        rundir = self.store.rundir(record.run_id)
        if not rundir.has(relative):
            if fmt != "markdown" and not any(e["type"].startswith("reports.") for e in self.store.events(record.run_id)):
                # Charts are rendered right after DECISION_READY, off the decision's critical path.
                raise FailedPrecondition(f"run {record.run_id}: the {fmt} report is still being rendered; retry shortly",
                                         reason="REPORT_NOT_READY")
            raise NotFound(f"run {record.run_id} has no {fmt} report")
        content = await asyncio.to_thread((rundir.path / relative).read_bytes)
        return vpb.GetRunReportResponse(content_type=content_type, content=content)

    async def CompleteRun(self, request: vpb.CompleteRunRequest, context) -> vpb.CompleteRunResponse:
        record = self._record(request.run_id)
        results = json_format.MessageToDict(request.results)
        rundir = self.store.rundir(record.run_id)
        if record.state != "COMPLETED":
            if record.state != "DECISION_READY":
                raise FailedPrecondition(f"run {record.run_id} cannot be completed from status {record.state}", reason="NOT_READY")
            now = iso(utcnow())
            completion = {"results": results, "completed_by": pseudonym(request.completed_by), "completed_at": now}

            def still_ready(current: RunRecord) -> None:
                # Under the run's row lock: of two replicas completing at once, only the first writes.
                if current.state == "COMPLETED":
                    raise _AlreadyDone
                if current.state != "DECISION_READY":
                    raise FailedPrecondition(f"run {record.run_id} cannot be completed from status {current.state}",
                                             reason="NOT_READY")

            decision_doc = rundir.read_json("outputs/decision.output.json")
            try:
                record = self.store.update(
                    record.run_id, "run.completed", actor=pseudonym(request.completed_by) or "tractionbuild",
                    state="COMPLETED", completed_at=now, payload={"result_keys": sorted(results)},
                    outbox=self._updates(step_name="complete", decision_doc=decision_doc), guard=still_ready,
                    files={"outputs/completion.json": json_bytes(completion)},
                )
            except _AlreadyDone:  # another request (or replica) completed it meanwhile: answer as a retry
                record = self._record(request.run_id)
            else:
                self._wake()
                return vpb.CompleteRunResponse(status=self._status(record))
        stored = rundir.read_json("outputs/completion.json")
        if stored["results"] != results:
            raise AlreadyExists(f"run {record.run_id} was completed with different results", reason="ALREADY_COMPLETED")
        return vpb.CompleteRunResponse(status=self._status(record))

    async def FinalizeRun(self, request: vpb.FinalizeRunRequest, context) -> vpb.FinalizeRunResponse:
        record = self._record(request.run_id)
        rundir = self.store.rundir(record.run_id)
        if not record.finalized_at:
            if record.state not in READY_STATES:
                raise FailedPrecondition(f"run {record.run_id} cannot be finalized from status {record.state}", reason="NOT_READY")
            decision_doc = rundir.read_json("outputs/decision.output.json")
            go, reasons = final_go_no_go(decision_doc)
            now = iso(utcnow())
            stored = {
                "run_id": record.run_id, "go_no_go": go, "recommendation": decision_doc["recommendation"],
                "confidence": decision_doc["confidence"], "reasons": reasons,
                "finalized_by": pseudonym(request.finalized_by), "finalized_at": now,
            }

            def not_finalized(current: RunRecord) -> None:
                # Under the run's row lock: the first finalization stands, later ones replay it.
                if current.finalized_at:
                    raise _AlreadyDone

            try:
                record = self.store.update(
                    record.run_id, "run.finalized", actor=pseudonym(request.finalized_by) or "tractionbuild",
                    finalized_at=now, payload={"go_no_go": go, "reasons": reasons}, guard=not_finalized,
                    files={"outputs/finalization.json": json_bytes(stored)},
                    outbox=self._updates(step_name="finalize", decision_doc=decision_doc,
                                         extra={"finalization": {"go_no_go": go, "reasons": reasons, "finalized_at": now}}),
                )
            except _AlreadyDone:
                record = self._record(request.run_id)
            else:
                self._wake()
                return self._finalize_response(record, stored)
        return self._finalize_response(record, rundir.read_json("outputs/finalization.json"))

    def _finalize_response(self, record: RunRecord, stored: dict) -> vpb.FinalizeRunResponse:
        return vpb.FinalizeRunResponse(
            run_id=record.run_id,
            go_no_go=stored["go_no_go"],
            recommendation=decision_pb2.Recommendation.Value(f"RECOMMENDATION_{stored['recommendation']}"),
            confidence=stored["confidence"],
            status=self._status(record),
            reasons=stored["reasons"],
        )

    async def ListRuns(self, request: vpb.ListRunsRequest, context) -> vpb.ListRunsResponse:
        if request.project_id:
            check_id("project_id", request.project_id)
        size = request.page_size or 50
        if not 1 <= size <= 500:
            raise InvalidArgument("page_size", "must be between 1 and 500")
        try:
            offset = int(request.page_token or 0)
            if offset < 0:
                raise ValueError
        except ValueError:
            raise InvalidArgument("page_token", "is not a token this service issued") from None
        records = sorted(
            (r for r in self.store if not request.project_id or r.project_id == request.project_id),
            key=lambda r: (r.created_at, r.run_id), reverse=True,
        )
        page = records[offset: offset + size]
        next_token = str(offset + size) if offset + size < len(records) else ""
        return vpb.ListRunsResponse(runs=[self._status(r) for r in page], next_page_token=next_token)


def final_go_no_go(decision_doc: dict) -> tuple[str, list[str]]:
    """T32: GO when the recommendation lets the product proceed (GO, PIVOT) and overwatch approved it."""
    reasons = []
    recommendation = decision_doc["recommendation"]
    verdict = decision_doc["review"]["verdict"]
    if recommendation not in ("GO", "PIVOT"):
        reasons.append(f"recommendation is {recommendation}")
    if verdict != "APPROVE":
        codes = ", ".join(r.get("code", "") for r in decision_doc["review"]["reasons"]) or "no reason given"
        reasons.append(f"overwatch verdict is {verdict} ({codes})")
    if not reasons and recommendation == "PIVOT":
        reasons.append("proceed with the pivot: " + "; ".join(decision_doc.get("critical_success_factors", [])))
    return ("GO" if recommendation in ("GO", "PIVOT") and verdict == "APPROVE" else "NO_GO"), reasons


def replica_id(address: str) -> str:
    """Stable across restarts of one replica (same host, same address), distinct between replicas."""
    return f"{socket.gethostname()}/{address}"


def build_host(settings: Settings, address: str | None = None) -> ServiceHost:
    address = address or settings.orchestrator_addr
    store = RunStore(settings.runs_dir, database_url=settings.database_url, owner=replica_id(address),
                     lease_s=settings.run_lease_s, idempotency_ttl_s=settings.idempotency_ttl_s)
    holder: dict = {}

    def register(server) -> list[str]:
        clients = StageClients(settings)
        callbacks = Callbacks(settings, store, outbox=store.outbox)  # durable: the store's database
        servicer = ValidationServicer(settings, store, clients, callbacks)
        feed = RunFeed(store, servicer.status_view).attach()
        servicer.recover()
        holder.update(servicer=servicer, clients=clients, callbacks=callbacks, feed=feed)
        vgrpc.add_ValidationServiceServicer_to_server(servicer, server)
        dgrpc.add_DeliveryServiceServicer_to_server(DeliveryServicer(callbacks), server)
        wgrpc.add_RunWatchServiceServicer_to_server(RunWatchServicer(feed), server)
        return [vpb.DESCRIPTOR.services_by_name["ValidationService"].full_name,
                dpb.DESCRIPTOR.services_by_name["DeliveryService"].full_name,
                wpb.DESCRIPTOR.services_by_name["RunWatchService"].full_name]

    async def on_start() -> None:
        holder["watch"] = asyncio.create_task(holder["feed"].run(), name="run-watch")
        await holder["callbacks"].start()
        holder["leases"] = asyncio.create_task(holder["servicer"].keep_leases(), name="leases")
        holder["keys"] = asyncio.create_task(holder["servicer"].purge_idempotency_keys(), name="idempotency-keys")

    async def on_stop() -> None:
        holder["feed"].close()  # gateways stop answering from their caches now, not after the drain
        for task in ("leases", "keys", "watch"):
            if task in holder:
                holder[task].cancel()
        await holder["servicer"].shutdown()
        # The runs cut short just now have FAILED updates queued: one last delivery round for them.
        await holder["callbacks"].drain(min(5.0, settings.grace_period_s))
        await holder["callbacks"].stop()
        await holder["clients"].close()

    return ServiceHost(
        "orchestrator", address, register, on_start=on_start, on_stop=on_stop,
        grace_s=settings.grace_period_s,
    )
