"""Running the `opus` command from a test: `run_opus`, in the test's process or as a real one.

`run_opus(args, cwd=..., env=...)` runs `opus ARGS` as a new `opus` process would —
environment exactly `env`, working directory `cwd`, the folders of `$PYTHONPATH` first
on `sys.path` — and gives its exit status and what it wrote to stdout and stderr, as a
`subprocess.CompletedProcess`. By default it runs in the test's process
(`opus_core.cli.main`, see `in_process`), without the start of a new Python; with
`process=True` it is the real `opus` script in a process of its own, for what only a
process shows: signals, an exit that does not return (`os._exit`, which a run in the
test's process refuses with `ExitedInProcess`), start-up, a terminal.

`OpusProject.run` (the `opus_project` fixture) runs `opus` through it; so does the
suite of opus itself.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

__all__ = ["ExitedInProcess", "in_process", "opus_command", "run_opus"]


def opus_command() -> list[str]:
    """How a real process starts opus: the `opus` script beside this Python, else
    `python -m opus_core.cli`."""
    script = Path(sys.executable).parent / "opus"
    return [str(script)] if script.exists() else [sys.executable, "-m", "opus_core.cli"]


def run_opus(
    args: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    env: dict[str, str],
    process: bool = False,
    timeout: float = 60,
    command: Sequence[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `opus ARGS` in `cwd` with exactly the environment `env`: its exit status and
    what it wrote to stdout and stderr.

    In this process (`in_process`) unless `process`: then `command` (by
    default `opus_command()`) followed by `args` runs in a process of its own, stopped
    after `timeout` seconds (`subprocess.TimeoutExpired`). A run in this process is not
    stopped: its tasks' own timeouts apply.
    """
    if not process:
        return in_process(args, cwd=Path(cwd), env=env)
    argv = [*(command if command is not None else opus_command()), *args]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


class ExitedInProcess(BaseException):
    """`os._exit` was called by an `opus` run in this process: the test needs `process=True`.

    A `BaseException`, as `SystemExit` is, so that opus does not report it as an error of
    its own (status 2) but lets it out to the test."""


def in_process(
    args: Sequence[str], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`opus_core.cli.main(args)` in this process, as a new `opus` process would run it.

    For the run, `os.environ` is exactly `env`, the working directory is `cwd`, the
    folders of `$PYTHONPATH` come first on `sys.path`, and file descriptors 1 and 2 are
    files (not terminals) read back as stdout and stderr — where `sys.stdout` and
    `sys.stderr` write too, so what forked task processes and the commands tasks start
    print is caught as well. stdin is empty. Before it, opus forgets what it keeps per
    process (`opus_core.testing.reset_caches`), and modules of the same name as one in
    the run's folders are put aside; after it, everything is put back and the modules
    the run imported from those folders are forgotten, so the next run imports its own
    (a folder already on `sys.path` is shared with the test: see `_own_modules`).
    A `SystemExit` (argparse's `--help` or usage error) gives its status; an exception
    opus lets out gives its traceback on stderr and status 1, as Python would.
    """
    from opus_core.cli import main
    from opus_core.testing.caches import reset_caches

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
    """Modules of `folders` are imported from there during the run and forgotten after it;
    modules of the same names imported from elsewhere before, as those of the `project`
    folder, are put aside meanwhile. Modules the run imports right in `project` (as its
    `[opus] processors`) are forgotten after it too.

    A folder already on `sys.path` is the test's as much as the run's (a plugin's folder
    the test imports it from, or the site-packages of an installed one): its modules are
    shared. What the test had imported before the run is there after it.
    """
    on_path = set(_roots(sys.path))
    own = [folder for folder in folders if not on_path & set(_roots([folder]))]
    names = {name for folder in (*own, project) for name in _module_names(folder)}
    names -= sys.stdlib_module_names  # a shadowed one is not imported from the folder either
    roots = _roots([*own, project])
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
        roots = _roots(own)
        for name, module in list(sys.modules.items()):
            if name not in imported and (_from(module, roots) or _top_level_in(module, project)):
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
