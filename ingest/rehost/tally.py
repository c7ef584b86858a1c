"""What the rehost stage has in hand, live, for progress by bytes (``Tally``) and one source's share of it
(``Transfer``).

A file's bytes count as done as they are acknowledged (a single upload's as they go out, a multipart upload's part by
part), not when the whole file is, so that a 1 GiB video moves the figures while it goes up. A part or a request that
is sent again adds to ``sent`` (the wire's figure) but never counts twice towards the work done.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Tally:
    """The run's rehost bytes: looked at, still to send, and sent."""

    sources: int = 0  # sources looked at this run (reused, unreadable or changed ones included)
    bytes_seen: int = 0  # the sizes of those that had to go up (a size the source does not tell adds nothing)
    bytes_left: int = 0  # of those, the bytes not yet acknowledged by storage, of sources not yet settled
    bytes_sent: int = 0  # bytes put on the wire (a retried part counts again)

    def start(self) -> Transfer:
        """One source looked at; it adds bytes ahead only once ``Transfer.expect`` says it must go up."""
        self.sources += 1
        return Transfer(self)

    def mean_size(self) -> float | None:
        """Bytes a looked-at source has cost on average (``None`` before the first)."""
        return self.bytes_seen / self.sources if self.sources else None


@dataclass(slots=True)
class Transfer:
    """One source's bytes in the tally; ``close()`` settles what is left of it whatever happened."""

    tally: Tally
    size: int = 0  # bytes to send (0: reused, unreadable, or a size the source does not tell)
    credited: int = 0  # bytes of this source counted as done

    def expect(self, size: int | None) -> None:
        """The source must go up: ``size`` bytes (``None``: unknown) join the bytes ahead."""
        self.size = size or 0
        self.tally.bytes_seen += self.size
        self.tally.bytes_left += self.size

    def sent(self, count: int) -> None:
        """``count`` bytes went out (or were acknowledged) for this source."""
        self.tally.bytes_sent += count
        self.done(count)

    def done(self, count: int) -> None:
        """``count`` bytes need not be sent (an earlier run's part, or bytes just sent)."""
        credit = max(0, min(count, self.size - self.credited))
        self.credited += credit
        self.tally.bytes_left -= credit

    def close(self) -> None:
        self.done(self.size - self.credited)
