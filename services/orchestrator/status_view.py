"""GetRunStatus answers, rebuilt only when the run's stored record or its live progress changed.

Status is polled far more often than it changes (TractionBuild polls every run; the guide allows
1000 requests a minute per token). Each answer used to read the record twice from the database,
parse its JSON into a RunRecord, resolve the run directory on disk (nine lstat calls) and build the
message field by field. Now one read fetches the record's JSON text; when that text and the live
progress equal the ones the cached answer was built from, the cached answer is returned as it is.
The comparison is on the exact stored text, so a change by any writer (another replica, a tool)
is seen by the next read: the cache can save work but never answer with an older state. Answers
carry the record's change_seq (the store's global change sequence), which the gateways' status
caches order states by; the run watch feed builds its changes here too (`answer`).
"""

from __future__ import annotations

import collections
import json

from smvm.errors import NotFound
from smvm.v1 import validation_service_pb2 as vpb

from services.orchestrator.store import RunRecord, RunStore

CACHED_RUNS = 512  # about 3 KiB each: a bounded cache of the most recently read runs


class StatusView:
    def __init__(self, store: RunStore, build_status, size: int = CACHED_RUNS):
        # build_status(record, run_directory) -> RunStatus (servicer.status_message)
        self.store = store
        self._build = build_status
        self._size = size
        self._answers: collections.OrderedDict[str, tuple[tuple[str, int, float | None], vpb.GetRunStatusResponse]] = (
            collections.OrderedDict())
        self.hits = self.misses = 0

    def response(self, run_id: str) -> vpb.GetRunStatusResponse:
        """The GetRunStatus answer of `run_id` (a checked run id); NotFound when there is no such run.
        The answer may be shared between calls: callers must not modify it."""
        version = self.store.record_version(run_id)
        if version is None:
            self._answers.pop(run_id, None)
            raise NotFound(f"run {run_id} not found", reason="RUN_NOT_FOUND")
        return self.answer(run_id, *version)

    def answer(self, run_id: str, text: str, change_seq: int) -> vpb.GetRunStatusResponse:
        """The answer for the stored version (`text`, `change_seq`) of a run's record, with its live progress."""
        key = (text, change_seq, self.store.live_progress(run_id))
        cached = self._answers.get(run_id)
        if cached is not None and cached[0] == key:
            self._answers.move_to_end(run_id)
            self.hits += 1
            return cached[1]
        self.misses += 1
        record = self.store.with_live(RunRecord.from_row(json.loads(text)))
        answer = vpb.GetRunStatusResponse(status=self._build(record, str(self.store.run_path(record))),
                                          change_seq=change_seq)
        self._answers[run_id] = (key, answer)
        self._answers.move_to_end(run_id)
        while len(self._answers) > self._size:
            self._answers.popitem(last=False)
        return answer

    def __len__(self) -> int:
        return len(self._answers)
