"""Where the orchestrator's state changes become outbox messages (updates and alerts).

The pipeline hands `update_messages` / `alert_messages` to the run store, which writes them in the
same transaction as the state change they report (the transactional outbox), then calls `wake`.
`update` / `alert` enqueue straight away, for callers whose change is not a run state change.
A run without a callback_url emits nothing.
"""

from __future__ import annotations

import logging
from typing import Callable

from smvm import metrics
from smvm.outbox import Outbox

from services.orchestrator.callbacks import payloads

log = logging.getLogger("smvm.callbacks")


class CallbackEmitter:
    def __init__(self, outbox: Outbox, wake: Callable[[], None] | None = None):
        self.outbox = outbox
        self._wake = wake

    @staticmethod
    def _base(record) -> str:
        return record.callback_url.rstrip("/")

    def _enqueue(self, message) -> None:
        try:
            self.outbox.enqueue([message])
        except Exception:  # a full or broken outbox must not fail the run; it is logged loudly
            log.exception("could not enqueue callback", extra={"run_id": message.run_id, "kind": message.kind})
            return
        if self._wake is not None:
            self._wake()

    def wake(self) -> None:
        """Tell the dispatcher that messages were committed (by the store, in a state change)."""
        if self._wake is not None:
            self._wake()

    def update_messages(self, record, *, step_name: str = "", decision_doc: dict | None = None,
                        extra: dict | None = None) -> list:
        """The update callback for `record` as it is after a state change (none without a callback_url)."""
        if not record.callback_url:
            return []
        decision = payloads.decision_summary(decision_doc) if decision_doc else None
        body = payloads.update_payload(record, step_name=step_name, decision=decision, extra=extra)
        return [payloads.message(payloads.UPDATE_KIND, record.run_id, self._base(record) + "/validation/update", body)]

    def alert_messages(self, record, alert_type: str, severity: str, message: str, details: dict | None = None) -> list:
        metrics.ALERTS.labels(alert_type).inc()
        if not record.callback_url:
            return []
        body = payloads.alert_payload(record, alert_type, severity, message, details)
        return [payloads.message(payloads.ALERT_KIND, record.run_id, self._base(record) + "/validation/alert", body)]

    def update(self, record, *, step_name: str = "", decision_doc: dict | None = None, extra: dict | None = None) -> None:
        for message in self.update_messages(record, step_name=step_name, decision_doc=decision_doc, extra=extra):
            self._enqueue(message)

    def alert(self, record, alert_type: str, severity: str, message: str, details: dict | None = None) -> None:
        for item in self.alert_messages(record, alert_type, severity, message, details):
            self._enqueue(item)
