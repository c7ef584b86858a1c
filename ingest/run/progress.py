"""Progress that fits where the run happens.

- On a terminal (``progress = "bar"``): a live ``rich`` display with done/total, succeeded, failed, invalid,
  skipped, the current rate, the limiter's effective rate, ETA, and the time the server kept us paused; a run that
  rehosts adds a line of bytes: sent, their rate, the bytes left and the ETA by bytes.
- Elsewhere (``"log"``: CI, cron, Kubernetes): a ``run.progress`` event every ``progress_interval`` seconds with
  the same figures.
- Reading stdin gives no total and so no ETA; the display and events say ``total: null`` / "total unknown".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from ingest.run.stats import RunStats
from ingest.terminal import human_size
from ingest.upload.limiter import RateLimiter

if TYPE_CHECKING:  # rich is imported to draw the bar, not by a run that logs its progress (cron, CI: start-up time)
    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.text import Text

log = structlog.get_logger("ingest.run.progress")

Snapshot = Callable[[], dict[str, Any]]


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def describe(figures: dict[str, Any]) -> str:
    """The figures line under the bar (rich markup)."""
    total = "(total unknown: stdin)" if figures["total"] is None else f"of {figures['total']}"
    return (
        f"  {figures['done']} {total} · [green]{figures['succeeded']} succeeded[/] · "
        f"[red]{figures['failed']} failed[/] · [yellow]{figures['invalid']} invalid[/] · "
        f"{figures['duplicate']} duplicate · {figures['skipped']} skipped\n"
        f"  {figures['rate']:.1f} items/s · limit {figures['effective_rate']:.1f}/s · ETA {_eta(figures['eta_s'])} · "
        f"paused by server {figures['paused_s']:.0f}s · {figures['requests']} requests, {figures['retries']} retries"
        f"{_rehost_line(figures)}"
    )


def _rehost_line(figures: dict[str, Any]) -> str:
    """The rehost stage's line (bytes sent, their recent rate, the bytes left and the ETA they give), or nothing in
    a run without one. Bytes left are "~" while they are an estimate (sources not looked at yet)."""
    if "bytes_sent" not in figures:
        return ""
    left = figures["bytes_left"]
    ahead = "" if left is None else f" · {'' if figures['bytes_left_exact'] else '~'}{human_size(left)} left"
    return (
        f"\n  rehost: {figures['rehosted']} uploaded, {figures['rehost_reused']} reused · "
        f"{human_size(figures['bytes_sent'])} sent · {human_size(figures['bytes_per_s'])}/s{ahead} · "
        f"ETA {_eta(figures['eta_bytes_s'])} by bytes"
    )


async def log_progress(snapshot: Snapshot, interval: float) -> None:
    """Emit ``run.progress`` every ``interval`` seconds until cancelled."""
    while True:
        await anyio.sleep(interval)
        log.info("run.progress", **snapshot())


async def show_progress(snapshot: Snapshot, *, console: Console | None = None, refresh: float = 0.25) -> None:
    """A live display on stderr until cancelled; the last state stays on screen."""
    from rich.console import Console, Group
    from rich.live import Live
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    console = console or Console(stderr=True)
    bar = Progress(TextColumn("[bold]ingest"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(), console=console)
    task = bar.add_task("", total=None)
    figures = Text()
    with Live(Group(bar, figures), console=console, redirect_stderr=True, redirect_stdout=False, transient=False):
        try:
            while True:
                _update(bar, task, figures, snapshot())
                await anyio.sleep(refresh)
        finally:
            _update(bar, task, figures, snapshot())


def _update(bar: Progress, task: TaskID, line: Text, figures: dict[str, Any]) -> None:
    bar.update(task, completed=figures["done"], total=figures["total"])
    fresh = type(line).from_markup(describe(figures))
    line.truncate(0)
    line.append_text(fresh)


async def report_progress(mode: str, figures: Snapshot, interval: float) -> None:
    """Show progress the way ``mode`` says: ``bar``, ``log`` or ``off``."""
    if mode == "bar":
        await show_progress(figures)
    elif mode == "log":
        await log_progress(figures, interval)


def progress_figures(stats: RunStats, limiter: RateLimiter) -> dict[str, Any]:
    """Progress figures: the stats' snapshot, the recent rate and ETA, and the limiter's state."""
    rate = stats.current_rate()
    eta = stats.eta_seconds(rate)
    return {
        **stats.snapshot(),
        "rate": round(rate, 1),
        "eta_s": None if eta is None else round(eta),
        "effective_rate": round(limiter.effective_rate, 2),
        "paused_s": round(limiter.paused_seconds, 2),
    }
