"""What a server does, counted for Prometheus (`GET /metrics`).

One registry per app (not prometheus-client's global one), so that two apps in one process (tests, an
app that mounts Tether twice) count apart. Counters and histograms are updated where things happen;
what is a state rather than an event (active runs by status, approvals waiting) is read from the store
when the metrics are scraped, so every worker of a deployment reports the same truth for it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

RUN_SECONDS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)
COMMIT_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
BATCH_EVENTS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs_ended = Counter(
            "tether_runs_ended", "Executions of runs that ended, by outcome.", ["outcome"], registry=r
        )
        self.run_seconds = Histogram(
            "tether_run_duration_seconds", "How long one execution of a run took.", buckets=RUN_SECONDS, registry=r
        )
        self.recoveries = Counter(
            "tether_run_recoveries", "Runs taken over after their worker died or lost its lease.", registry=r
        )
        self.events_written = Counter("tether_events_written", "Events committed to thread logs.", registry=r)
        self.commit_seconds = Histogram(
            "tether_group_commit_seconds", "Latency of one group commit.", buckets=COMMIT_SECONDS, registry=r
        )
        self.commit_events = Histogram(
            "tether_group_commit_events", "Events in one group commit.", buckets=BATCH_EVENTS, registry=r
        )
        self.open_streams = Gauge("tether_open_streams", "Event streams open on this worker.", registry=r)
        self.cut_off = Counter(
            "tether_streams_cut_off", "Streams closed because their client fell too far behind.", registry=r
        )
        self.active_runs = Gauge("tether_active_runs", "Runs not yet ended, by status.", ["status"], registry=r)
        self.approvals_waiting = Gauge(
            "tether_approvals_waiting", "Tool calls waiting for a human's decision.", registry=r
        )

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
