"""Running the `opus` command — in this process, or as a real process — and making real
(on-disk) plugin distributions for it."""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

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

    It runs in this process (`in_process`), as a new process would see it, unless
    `process`: then it is the real `opus` script in a process of its own, stopped after
    `timeout` seconds — for what only a process shows (signals, an exit that does not
    return, start-up, a terminal).
    """
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    environment["XDG_CONFIG_HOME"] = str(cwd / ".user-config")
    # The default persistence (sqlite) keeps state in the user's state folder: the test's own.
    environment.setdefault("XDG_STATE_HOME", str(cwd / ".user-state"))
    environment.update(env or {})
    if not process:
        return in_process(args, cwd=cwd, env=environment)
    return subprocess.run(
        [str(OPUS), *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class ExitedInProcess(Exception):
    """`os._exit` was called by an `opus` run in this process: the test needs `process=True`."""


def in_process(
    args: tuple[str, ...] | list[str], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`opus_core.cli.main(args)` in this process, as a new `opus` process would run it.

    For the run, `os.environ` is exactly `env`, the working directory is `cwd`, the
    folders of `$PYTHONPATH` come first on `sys.path`, and file descriptors 1 and 2 are
    files (not terminals) read back as stdout and stderr — where `sys.stdout` and
    `sys.stderr` write too, so what forked task processes and the commands tasks start
    print is caught as well. stdin is empty. Before it, opus forgets what it keeps per
    process (`opus_core.testing.reset_caches`), and modules of the same name as one in
    the run's folders are put aside; after it, everything is put back and the modules
    the run imported from those folders are forgotten, so the next run imports its own.
    A `SystemExit` (argparse's `--help` or usage error) gives its status; an exception
    opus lets out gives its traceback on stderr and status 1, as Python would.
    """
    from opus_core.cli import main
    from opus_core.testing import reset_caches

    folders = [
        os.path.join(cwd, entry) for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry
    ]
    saved_environ = dict(os.environ)
    saved_path = list(sys.path)
    saved_cwd = os.getcwd()
    with _own_modules(folders, str(cwd)), _captured(env.get("PYTHONIOENCODING", "")) as (out, err):
        try:
            os.environ.clear()
            os.environ.update(env)
            sys.path[:0] = folders
            os.chdir(cwd)
            reset_caches()
            importlib.invalidate_caches()
            with _no_process_exit():
                status = _status(main, list(args))
        finally:
            os.chdir(saved_cwd)
            sys.path[:] = saved_path
            os.environ.clear()
            os.environ.update(saved_environ)
            reset_caches()
    return subprocess.CompletedProcess(["opus", *args], status, out.text, err.text)


def _status(main: Callable[[list[str]], int], argv: list[str]) -> int:
    try:
        return int(main(argv))
    except SystemExit as exc:  # argparse: --help, --version, a usage error
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        sys.stderr.write(f"{exc.code}\n")
        return 1
    except ExitedInProcess:
        raise
    except Exception:  # what Python does with an exception that ends a program
        traceback.print_exc()
        return 1


class _Captured:
    """What one of fds 1 and 2 received, once the run is over."""

    def __init__(self) -> None:
        self.text = ""


@contextlib.contextmanager
def _captured(io_encoding: str) -> Iterator[tuple[_Captured, _Captured]]:
    """fds 1 and 2 (and `sys.stdout`, `sys.stderr`) into temporary files; stdin empty.

    The streams are as Python makes them for a pipe: UTF-8, stdout strict and stderr
    with backslashreplace, unless `io_encoding` (`$PYTHONIOENCODING`) says otherwise."""
    encoding, _, errors = io_encoding.partition(":")
    encoding = encoding or "utf-8"
    streams = sys.stdin, sys.stdout, sys.stderr
    for stream in streams[1:]:
        with contextlib.suppress(Exception):
            stream.flush()
    files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
    saved = [os.dup(1), os.dup(2)]
    results = _Captured(), _Captured()
    try:
        os.dup2(files[0].fileno(), 1)
        os.dup2(files[1].fileno(), 2)
        sys.stdout = open(
            1, "w", encoding=encoding, errors=errors or "strict", closefd=False, buffering=1
        )
        sys.stderr = open(
            2, "w", encoding=encoding, errors="backslashreplace", closefd=False, buffering=1
        )
        sys.stdin = open(os.devnull, encoding=encoding)
        try:
            yield results
        finally:
            for stream in (sys.stdout, sys.stderr, sys.stdin):
                with contextlib.suppress(Exception):
                    stream.close()
            sys.stdin, sys.stdout, sys.stderr = streams
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        for file, result in zip(files, results, strict=True):
            file.seek(0)
            result.text = file.read().decode(encoding, errors="replace")
            file.close()


@contextlib.contextmanager
def _own_modules(folders: list[str], project: str) -> Iterator[None]:
    """Modules of `folders` (and of folders the run puts on `sys.path`, as it does the
    project's for `[opus] processors`) are imported from there during the run and forgotten
    after it; modules of the same names imported from elsewhere before, as those of the
    `project` folder, are put aside meanwhile."""
    before = set(sys.path)
    names = {name for folder in (*folders, project) for name in _module_names(folder)}
    names -= sys.stdlib_module_names  # a shadowed one is not imported from the folder either
    roots = _roots([*folders, project])
    aside = {
        name: module
        for name, module in sys.modules.items()
        if name.partition(".")[0] in names and not _from(module, roots)
    }
    for name in aside:
        del sys.modules[name]
    imported = set(sys.modules)
    try:
        yield
    finally:
        roots = _roots([*folders, *(entry for entry in sys.path if entry not in before)])
        for name, module in list(sys.modules.items()):
            if _from(module, roots) or (name not in imported and _top_level_in(module, project)):
                del sys.modules[name]
        sys.modules.update(aside)


def _top_level_in(module: object, folder: str) -> bool:
    """Whether `module` is a module or package right in `folder` (a project's `procs.py`,
    imported for `[opus] processors`), not in a folder below it."""
    file = getattr(module, "__file__", None)
    if not isinstance(file, str):
        return False
    here = os.path.dirname(file)
    if os.path.basename(file) == "__init__.py":
        here = os.path.dirname(here)
    return os.path.realpath(here) == os.path.realpath(folder)


def _module_names(folder: str) -> list[str]:
    """The modules and regular packages `import` finds in `folder`."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    return [
        stem
        for stem, suffix in map(os.path.splitext, entries)
        if suffix == ".py"
        or (not suffix and os.path.isfile(os.path.join(folder, stem, "__init__.py")))
    ]


def _roots(folders: list[str]) -> tuple[str, ...]:
    found = {
        os.path.join(how(folder), "")
        for folder in folders
        if folder
        for how in (os.path.abspath, os.path.realpath)
    }
    return tuple(found)


def _from(module: object, roots: tuple[str, ...]) -> bool:
    """Whether `module` was imported from one of the folders `roots`."""
    files = [getattr(module, "__file__", None), *(getattr(module, "__path__", None) or ())]
    return any(isinstance(file, str) and file.startswith(roots) for file in files)


@contextlib.contextmanager
def _no_process_exit() -> Iterator[None]:
    """`os._exit` in this process raises `ExitedInProcess` instead of ending pytest (a forked
    child of the run still exits)."""
    real_exit = os._exit
    pid = os.getpid()

    def exit_unless_here(status: int) -> None:
        if os.getpid() != pid:
            real_exit(status)
        raise ExitedInProcess(
            f"opus called os._exit({status}) in the test's process: run it with process=True"
        )

    os._exit = exit_unless_here  # type: ignore[assignment]
    try:
        yield
    finally:
        os._exit = real_exit


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
