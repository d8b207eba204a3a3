"""Callbacks to TractionBuild: signed webhooks and the results sync, delivered from the outbox.

`signing` (Standard Webhooks headers), `urls` (which callback URLs may be called), `payloads` (the
guide's update / alert / results bodies), `memory_outbox` (an in-process, NON-durable implementation
of smvm.outbox.Outbox for tests and tools; the orchestrator uses the run store's durable SqlOutbox), `dispatcher` (at-least-once
delivery with backoff, Retry-After, 410 and a per-host circuit breaker) and `sync` (the T0+30 results
sync job).
"""
