"""Prometheus / OpenMetrics for unattended runs: an HTTP endpoint (``--metrics-port``) and a textfile for
node-exporter's textfile collector (``--metrics-textfile``, written atomically every progress interval and at
the end).

Metrics are read from the run's counters at scrape time (a custom collector), so the hot path pays nothing:

| metric | type | labels |
| --- | --- | --- |
| ``ingest_items_total`` | counter | ``status`` (succeeded, failed, invalid, duplicate, skipped_done, skipped_failed) |
| ``ingest_requests_total`` | counter | ``http_status`` ("201", "429", "none" for no answer …) |
| ``ingest_retries_total`` | counter | |
| ``ingest_rows_read_total`` | counter | |
| ``ingest_items_expected`` | gauge | (absent when the total is unknown) |
| ``ingest_in_flight_requests`` | gauge | |
| ``ingest_rate_limit_configured`` / ``ingest_rate_limit_effective`` | gauge | requests/s |
| ``ingest_paused_seconds_total`` | counter | time the server's 429/503 hints held every consumer |
| ``ingest_request_duration_seconds`` | histogram | per attempt |
| ``ingest_run_info`` | gauge (1) | ``run_id``, ``version`` |
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import structlog
from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ingest.run.stats import LATENCY_BUCKETS, RunStats
from ingest.upload.limiter import RateLimiter
from ingest.version import __version__

log = structlog.get_logger("ingest.run.metrics")


class RunCollector(Collector):
    """Turns one run's ``RunStats`` and ``RateLimiter`` into metric families at collection time."""

    def __init__(self, stats: RunStats, limiter: RateLimiter) -> None:
        self.stats = stats
        self.limiter = limiter

    def collect(self) -> Iterator[Metric]:
        stats, limiter = self.stats, self.limiter
        items = CounterMetricFamily("ingest_items", "Items by final status this run", labels=["status"])
        for status, count in sorted(stats.by_status.items()):
            items.add_metric([status], count)
        items.add_metric(["skipped_done"], stats.skipped_done)
        items.add_metric(["skipped_failed"], stats.skipped_failed)
        yield items
        requests = CounterMetricFamily("ingest_requests", "Upload attempts by HTTP status", labels=["http_status"])
        for status, count in sorted(stats.by_http_status.items()):
            requests.add_metric([status], count)
        yield requests
        yield CounterMetricFamily("ingest_retries", "Attempts after an item's first", value=stats.retries)
        yield CounterMetricFamily("ingest_rows_read", "Manifest rows read", value=stats.rows)
        if stats.total is not None:
            yield GaugeMetricFamily("ingest_items_expected", "Rows in the manifests (pre-count)", value=stats.total)
        yield GaugeMetricFamily("ingest_in_flight_requests", "Requests on the wire", value=stats.in_flight)
        yield GaugeMetricFamily("ingest_rate_limit_configured", "Configured requests/s", value=limiter.rate)
        yield GaugeMetricFamily("ingest_rate_limit_effective", "Current requests/s", value=limiter.effective_rate)
        yield CounterMetricFamily("ingest_paused_seconds", "Seconds held by server hints", value=limiter.paused_seconds)
        yield self._latency()
        info = GaugeMetricFamily("ingest_run_info", "The run", labels=["run_id", "version"])
        info.add_metric([stats.run_id, __version__], 1)
        yield info

    def _latency(self) -> HistogramMetricFamily:
        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], self.stats.latency_counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        return HistogramMetricFamily(
            "ingest_request_duration_seconds",
            "Upload attempt latency",
            buckets=buckets,
            sum_value=self.stats.latency_sum,
        )


class Metrics:
    """The run's metrics registry, its optional HTTP endpoint and textfile."""

    def __init__(self, stats: RunStats, limiter: RateLimiter, *, textfile: Path | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(RunCollector(stats, limiter))
        self.textfile = textfile  # where write() puts the node-exporter textfile, if anywhere
        self._write_failed = False  # a textfile write failed (warned once)
        self._server: Any = None  # the HTTP server, while serving

    def __repr__(self) -> str:
        return f"Metrics(textfile={self.textfile!r}, serving={self._server is not None})"

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` in a background thread; returns the bound port (useful with port 0)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def write(self) -> None:
        """Write the textfile (atomically: temp file + rename), if one is configured. A failure (disk full) is
        one warning, not the end of the run: metrics are a view, the results file is the record."""
        if self.textfile is None:
            return
        try:
            self.textfile.parent.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(self.textfile), self.registry)
        except OSError as exc:
            if not self._write_failed:
                log.warning("metrics.write_failed", textfile=str(self.textfile), message=exc.strerror or str(exc))
            self._write_failed = True

    def close(self) -> None:
        """Final textfile write and stop serving."""
        self.write()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


async def export_metrics(metrics: Metrics, interval: float) -> None:
    """Rewrite the metrics textfile every ``interval`` seconds (in a worker thread: it is a file write)."""
    while True:
        await anyio.sleep(interval)
        await anyio.to_thread.run_sync(metrics.write)
