"""The errors that end a command or a run, as one tree (an item's own failure is never an exception: it is a
``failed`` or ``invalid`` record).

```
IngestError                     base of everything below; carries the process exit code
├── UsageError                  bad command line, settings or credentials; nothing was sent (exit 2)
│   ├── ConfigError             a settings file or value is wrong; names the file and key
│   ├── CredentialsError        no API key could be found, or it is malformed
│   ├── ManifestError           a manifest cannot be read at all (missing, unreadable, no header); names the file
│   └── ResultsLockedError      another run holds the results file's lock
├── ApiError                    an HTTP answer that ends the run (not one item); status, type, request id
│   └── AuthRejected            401/403: the key is wrong or revoked; the run aborts (exit 3)
├── RunAborted                  the run stopped early on purpose (credentials rejected, failure threshold) (exit 3)
│   └── TlsFailure              the server's TLS certificate or handshake failed verification (exit 3)
├── ServiceUnavailable          the service as a whole cannot be used: endpoint not found, unreachable, an outage
│                               longer than ``max_outage``; items stay pending (exit 4)
└── LocalIOError                the results file, its lock or the metrics file cannot be written (exit 5); names
                                the path; what was recorded before is intact
```

Errors raised while a run is going are caught at the run's edge (``RunControl.abort`` keeps the first as the
reason the run stopped) and end the process through ``exit_code``; the CLI prints one line for them.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_ITEMS_FAILED = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3
EXIT_SERVICE_UNAVAILABLE = 4
EXIT_LOCAL_IO = 5
EXIT_INTERRUPTED = 130


class IngestError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with when this error ends the process."""

    exit_code: int = EXIT_ABORTED


class UsageError(IngestError):
    """The command line, a setting or the credentials are wrong; nothing was sent."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A settings file or value is wrong; the message names the file (or variable) and key."""


class CredentialsError(UsageError):
    """No API key was found (``FAL_KEY``, ``FAL_KEY_ID`` + ``FAL_KEY_SECRET``, or a key file), or it is malformed."""


class ManifestError(UsageError):
    """A whole manifest cannot be read (missing, unreadable, empty CSV header); the message names the file."""


class ResultsLockedError(UsageError):
    """Another live ``ingest run`` holds the lock on this results file."""


@dataclass(eq=False)
class ApiError(IngestError):
    """An answer of the API that concerns the whole run rather than one item (see ``AuthRejected``)."""

    status: int
    type: str
    message: str
    request_id: str | None = None

    def __str__(self) -> str:
        rid = f" (request {self.request_id})" if self.request_id else ""
        return f"HTTP {self.status} {self.type}: {self.message}{rid}"


class AuthRejected(ApiError):
    """401/403: the credentials are wrong or were revoked; the run aborts with exit 3."""


class RunAborted(IngestError):
    """The run was stopped on purpose before all items were tried (credentials rejected, failure threshold)."""

    exit_code = EXIT_ABORTED


class TlsFailure(RunAborted):
    """TLS verification or the handshake with the API failed: a wrong host, a proxy, a broken CA bundle (exit 3)."""


class ServiceUnavailable(IngestError):
    """The service as a whole could not be used (no upload endpoint at the URL, unreachable, an outage longer than
    ``max_outage``): not a failure of any item, so nothing is recorded for them and the same command resumes."""

    exit_code = EXIT_SERVICE_UNAVAILABLE


class LocalIOError(IngestError):
    """Writing a local file failed (disk full, read-only filesystem, a directory where a file belongs); the
    message names the path. Records written before the failure are intact."""

    exit_code = EXIT_LOCAL_IO
