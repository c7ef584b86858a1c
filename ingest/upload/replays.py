"""Is this fresh results file a stranger to items that were done before? The first answers say so.

When a run starts on a results file with no record yet, and most of its first successes are replays — the server
says ``Idempotent-Replayed: true``, or the asset was created before this run began — the items were ingested by an
earlier run whose results file is elsewhere (a renamed manifest gets a new default results file). Nothing is
created twice while the server remembers the keys (about a day); after that it would be. ``ReplayWatch`` warns
once (``results.replays``), after ``SAMPLE`` successes.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from ingest.upload.client import AttemptResult


SAMPLE = 20  # first successes looked at
SHARE = 0.5  # above this share of replays among them, warn
CLOCK_SLACK_S = 120.0  # an asset older than the run's start by more than this was created by an earlier run

log = structlog.get_logger("ingest.upload.replays")


class ReplayWatch:
    """Counts replays among the first ``SAMPLE`` successes of a run on a fresh results file."""

    def __init__(self, *, started_epoch: float, results: str, active: bool = True) -> None:
        self.active = active  # only a run on a fresh results file looks
        self.started_epoch = started_epoch  # when the run began (Unix time)
        self.results = results  # the results file, for the warning
        self.seen = 0  # successes looked at
        self.replays = 0  # of which replays
        self.warned = False

    def __repr__(self) -> str:
        return f"ReplayWatch(seen={self.seen}, replays={self.replays}, warned={self.warned})"

    def note(self, answer: AttemptResult) -> None:
        """Look at one success."""
        if not self.active or self.seen >= SAMPLE:
            return
        self.seen += 1
        self.replays += answer.replayed or self._created_before(answer)
        if self.seen == SAMPLE and self.replays > SHARE * SAMPLE:
            self.warned = True
            log.warning(
                "results.replays",
                replays=self.replays,
                of=self.seen,
                results=self.results,
                hint="these items were ingested before: the earlier run's results file is probably elsewhere "
                "(a renamed manifest gets a new default results file); give it with --results",
            )

    def _created_before(self, answer: AttemptResult) -> bool:
        created = (answer.asset or {}).get("created_at")
        if not isinstance(created, str):
            return False
        try:
            moment = datetime.fromisoformat(created)
        except ValueError:
            return False
        return moment.timestamp() < self.started_epoch - CLOCK_SLACK_S
