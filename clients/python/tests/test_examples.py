"""The examples run as documented, and the README shows exactly their code."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from agentry.testing import Tenant
from support import make_agent

PACKAGE = Path(__file__).resolve().parents[1]
EXAMPLES = PACKAGE / "examples"


def test_the_echo_worker_serves_the_run_start_run_prints(tenant: Tenant) -> None:
    agent = make_agent(tenant)
    env = {**os.environ, "AGENTRY_TARGET": tenant.target}
    worker = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "echo_worker.py"), agent.name],
        env={**env, "AGENTRY_API_KEY": tenant.worker_key},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline().startswith("serving ")
        started = subprocess.run(
            [sys.executable, str(EXAMPLES / "start_run.py"), agent.instance, "hello from python"],
            env={**env, "AGENTRY_API_KEY": tenant.developer_key},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode == 0, started.stderr
        assert "hello from python [RUN_STATUS_SUCCEEDED]" in started.stdout
        assert started.stdout.rstrip().endswith("output: 'hello from python' (3 tokens)")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        worker.kill()


def test_every_readme_snippet_is_code_an_example_runs() -> None:
    examples = "\n".join(p.read_text() for p in EXAMPLES.glob("*.py"))
    assert len(list(EXAMPLES.glob("*.py"))) == 3
    # This package's README, and the repository's, which shows the same section.
    for path in (PACKAGE / "README.md", PACKAGE.parents[1] / "README.md"):
        snippets = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
        assert snippets, f"{path} shows no Python snippet"
        for snippet in snippets:
            assert snippet in examples, f"{path}: snippet not found verbatim in examples/:\n{snippet}"


def test_the_repository_readme_shows_this_readme() -> None:
    """The repository README's Python section is this package's README (below its title)."""
    own = (PACKAGE / "README.md").read_text().split("\n", 1)[1]
    repository = (PACKAGE.parents[1] / "README.md").read_text()
    section = repository.split("### Python\n", 1)[1].split("\n### ", 1)[0]
    assert section.strip() == own.strip()
