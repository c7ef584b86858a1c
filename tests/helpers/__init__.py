"""Test helpers, one module per kind of seam:

- ``records``: small manifests to write, results files to read, the tests' media URLs;
- ``net``: free loopback ports;
- ``logs``: JSON log events out of a process's stderr;
- ``pipeline``: in-process runs (``make_config``, ``run``) and ``ScriptedServer``, a spy server scripted per key;
- ``cli``: ``python -m ingest …`` in a subprocess with a clean environment;
- ``processes``: the fake server and workers as real processes, for chaos, signal and hostile-input tests;
- ``canned_server``: a script serving a canned 201 (the memory test's server, in another process).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
KEY = "fake-key"  # the key the embedded fake server accepts by default
