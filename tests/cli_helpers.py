"""Running the `opus` command — in this process, or as a real process — and making real
(on-disk) plugin distributions for it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from opus_core.testing.cli import run_opus

OPUS = Path(sys.executable).parent / "opus"


def opus(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    process: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run `opus ARGS` in `cwd` with a clean configuration environment: its exit status and
    what it wrote to stdout and stderr.

    It runs in this process (`opus_core.testing.cli.run_opus`, the plugin author's kit),
    as a new process would see it, unless `process`: then it is the real `opus` script in
    a process of its own, stopped after `timeout` seconds — for what only a process shows
    (signals, an exit that does not return, start-up, a terminal).
    """
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    environment["XDG_CONFIG_HOME"] = str(cwd / ".user-config")
    # The default persistence (sqlite) keeps state in the user's state folder: the test's own.
    environment.setdefault("XDG_STATE_HOME", str(cwd / ".user-state"))
    environment.update(env or {})
    return run_opus(
        args, cwd=cwd, env=environment, process=process, timeout=timeout, command=[str(OPUS)]
    )


def opus_on_a_terminal(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `opus ARGS` on a pseudo-terminal; its exit status and everything it wrote."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes opus
        os.chdir(cwd)
        for key in [k for k in os.environ if k.startswith("OPUS_") or k == "NO_COLOR"]:
            del os.environ[key]
        os.environ["XDG_CONFIG_HOME"] = str(cwd / ".user-config")
        os.environ.update(env or {})
        os.execv(str(OPUS), [str(OPUS), *args])
    output = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the terminal closes when opus exits
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def make_distribution(
    site: Path,
    name: str,
    module: str,
    source: str,
    entry_point: str | None = None,
    version: str = "1.0",
) -> None:
    """Install a one-module distribution into `site` (a directory to put on PYTHONPATH)."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[opus]\n{entry_point or module} = {module}\n")


LOG_LINE = re.compile(r"\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
"""A line of the plain logger, which `opus` writes to stderr (a run stopped by an error logs
what happened before it)."""


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert `result` is a usage error: status 2, one line on stderr besides warnings and
    log lines, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [
        line for line in lines if not line.startswith("opus: warning:") and not LOG_LINE.match(line)
    ]
    assert len(errors) == 1, result.stderr
    return errors[0]


def interruptible(command: list[str], **popen: object) -> subprocess.Popen[str]:
    """Start `command` so that SIGINT interrupts it, as Ctrl-C does in a terminal.

    A shell starts background jobs with SIGINT ignored, and a child inherits
    that; these tests send SIGINT themselves, wherever the suite was started.
    """
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **popen,
    )


def runs_at_once(
    root: Path, head: str, tasks: int, contexts: tuple[str, ...]
) -> list[tuple[int, str, str]]:
    """`opus run --context C` for each of `contexts`, all at once, in a project at `root`
    whose `opus.toml` is `head` plus `tasks` no-op tasks of the processor `noop:Noop`
    (which the caller writes); each run's (exit status, stdout, stderr)."""
    lines = [head] + [
        f'[[tasks]]\nkind = "Noop"\nversion = "v1"\nmetadata = {{ name = "n{i}" }}\n'
        for i in range(tasks)
    ]
    (root / "opus.toml").write_text("\n".join(lines))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env["XDG_CONFIG_HOME"] = str(root / ".user")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "opus_core.cli", "run", "--context", context],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for context in contexts
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append((proc.returncode, out, err))
    return results
