"""The container and Kubernetes files: the Dockerfile passes hadolint and has the promised shape; the k8s
manifests parse and their ingest arguments are accepted by the real CLI parser."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ingest.admission.shard import parse_shard
from ingest.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "configs" / "k8s"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is not installed (it is a dev dependency: make test installs it)")
    return found


def test_dockerfile_passes_hadolint() -> None:
    """hadolint reports nothing on the Dockerfile."""
    result = subprocess.run([_hadolint(), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    """Multi-stage, slim base, non-root user in the final stage, no build tools there, ENTRYPOINT ingest."""
    text = (ROOT / "Dockerfile").read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) >= 2 and all("slim" in line for line in stages)
    final = text[text.rindex("FROM ") :]
    assert "USER 10001" in final
    assert 'ENTRYPOINT ["ingest"]' in final
    assert "build" not in final.split("COPY --from=build", 1)[1].split("USER", 1)[0].replace("/wheels", "")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]["containers"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["indexed-job.yaml", "cronjob.yaml"])
def test_k8s_args_are_valid_cli(name: str) -> None:
    """The args in the shipped manifests parse with the real `ingest` parser and name existing config profiles."""
    (doc,) = _documents(K8S / name)
    for container in _containers(doc):
        args = build_parser().parse_args(container["args"])
        assert args.command == "run"
        config = Path(str(args.config)).name
        assert (ROOT / "configs" / config).exists()
        assert container["envFrom"][0]["secretRef"]["name"] == "fal-api-key"


def test_indexed_job_shards_match_completions() -> None:
    """The Indexed Job's --shard /N matches its completions, and K comes from JOB_COMPLETION_INDEX."""
    (doc,) = _documents(K8S / "indexed-job.yaml")
    assert doc["spec"]["completionMode"] == "Indexed"
    args = _containers(doc)[0]["args"]
    shard_text = args[args.index("--shard") + 1]
    completions = doc["spec"]["completions"]
    shard = parse_shard(shard_text, env={"JOB_COMPLETION_INDEX": str(completions - 1)})
    assert shard is not None and shard.count == completions and shard.index == completions - 1
    assert "{shard}" in args[args.index("--results") + 1]
