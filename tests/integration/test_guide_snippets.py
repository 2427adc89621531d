"""The deployment guide's own Python snippets run unchanged against Mira.

The snippets are read from docs/mira-deployment-guide.md (a copy of the guide users read), so an
edit of the guide that breaks them fails here. Each runs in a real subprocess with its own
working directory and config.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support import ROOT

GUIDE = ROOT / "docs" / "mira-deployment-guide.md"


def snippet(heading: str, language: str = "python") -> str:
    """The first fenced code block of `language` after the heading named `heading`."""
    text = GUIDE.read_text()
    start = re.search(rf"^#+ {re.escape(heading)}\s*$", text, re.MULTILINE)
    assert start, f"heading {heading!r} not found in the guide"
    block = re.compile(rf"```{language}\n(.*?)```", re.DOTALL).search(text, start.end())
    assert block, f"no {language} block after {heading!r}"
    return block.group(1)


def run(
    tmp_path: Path, code: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "snippet.py"
    script.write_text(code)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MIRA_")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT / "src")])
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_config(tmp_path: Path, config: dict[str, object]) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))


def test_monitoring_changes_snippet_registers_and_receives_a_reload(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        {
            "config": {"hot_reload": True, "poll_interval": 0.2},
            "logging": {"file": str(tmp_path / "app.log")},
        },
    )
    code = snippet("Monitoring Changes") + textwrap.dedent("""
        import json, os, time
        app.start()
        with open("config.json.tmp", "w") as f:
            json.dump({"config": {"hot_reload": True, "poll_interval": 0.2},
                       "logging": {"file": "app.log", "level": "DEBUG"}}, f)
        os.replace("config.json.tmp", "config.json")
        deadline = time.monotonic() + 10
        while app.runtime.bus.state.config_generation < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        app.stop()
    """)
    result = run(tmp_path, code)
    assert result.returncode == 0, result.stderr
    assert "Configuration updated: {" in result.stdout
    assert "'level': 'DEBUG'" in result.stdout


def test_monitoring_changes_snippet_with_hot_reload_off_registers_nothing(tmp_path: Path) -> None:
    write_config(tmp_path, {"logging": {"file": str(tmp_path / "app.log")}})
    result = run(
        tmp_path,
        snippet("Monitoring Changes") + "\nprint('hot_reload_config', app.hot_reload_config)\n",
    )
    assert result.returncode == 0, result.stderr
    assert "hot_reload_config None" in result.stdout


def test_handling_secret_changes_snippet_gets_the_rotation(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        {
            "logging": {"file": str(tmp_path / "app.log")},
            "integrations": {"github": {"token": "secret://github-credentials:token"}},
        },
    )
    code = (
        textwrap.dedent("""
        from mira.app import MiraApplication
        from mira.container import Container
        from mira.testing import InMemorySecretsBackend
        from dependency_injector import providers
        backend = InMemorySecretsBackend({"github-credentials": {"token": "ghp_before_rotation"}})
        container = Container()
        container.secrets_backend.override(providers.Object(backend))
        app = MiraApplication("config.json", container=container)
        app.start()
    """)
        + snippet("Handling Secret Changes")
        + textwrap.dedent("""
        import time
        from mira.domain.commands import MarkReady
        backend.set("github-credentials", {"token": "ghp_after_rotation"})
        # The bus handles commands in order: once this one is done, the rotation's callbacks ran.
        app.runtime.bus.handle(MarkReady(correlation_id="barrier", at=time.time()))
        app.stop()
    """)
    )
    result = run(tmp_path, code)
    assert result.returncode == 0, result.stderr
    assert "Secret rotated: {'token': SecretValue('**********')}" in result.stdout
    assert "ghp_after_rotation" not in result.stdout + result.stderr


def test_custom_backend_snippet_is_a_working_secrets_backend(tmp_path: Path) -> None:
    # No AWS here: a stand-in `boto3` module on the path lets the snippet run unchanged.
    (tmp_path / "boto3.py").write_text(
        textwrap.dedent("""
        class _Client:
            def get_secret_value(self, SecretId):
                return {"SecretString": "value-of-" + SecretId}
        def client(name):
            assert name == "secretsmanager"
            return _Client()
    """)
    )
    (tmp_path / "aws_backend.py").write_text(snippet("AWS"))
    write_config(
        tmp_path,
        {
            "secrets": {"backend": "aws_backend.AWSSecretsBackend"},
            "logging": {"file": str(tmp_path / "app.log")},
        },
    )
    code = textwrap.dedent("""
        from aws_backend import AWSSecretsBackend
        from mira.app import MiraApplication
        from mira.utils.secrets_manager import SecretsBackend, get_secrets_manager
        app = MiraApplication("config.json")
        manager = get_secrets_manager()
        backend = manager.backend
        print("backend", type(backend).__name__, isinstance(backend, SecretsBackend))
        print("get_secret", manager.backend.get_secret("prod/db", "password"))
    """)
    result = run(tmp_path, code)
    assert result.returncode == 0, result.stderr
    assert "backend AWSSecretsBackend True" in result.stdout
    assert "get_secret None" in result.stdout  # the guide's example body ends in `pass`


def test_the_example_the_guide_links_runs_as_is(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "deployment_features_example.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        env={k: v for k, v in os.environ.items() if not k.startswith("MIRA_")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "X-Request-ID example-42" in result.stdout
    tagged = next(x for x in result.stdout.splitlines() if "correlation_id=example-42" in x)
    assert "'Request handled'" in tagged and "[]" not in tagged  # read after the lines are written
    assert "SecretValue('**********')" in result.stdout
    assert "callback saw logging.level = DEBUG" in result.stdout
    assert "still ready, generation 2" in result.stdout
    assert "exit code 0" in result.stdout
    assert "ghp_example_token_value" not in result.stdout + result.stderr
