"""What a task process does to itself once forked: its keeper, its own process group and
signal handling, and the end of everything it started.

The process that opus forks does not run the task. It becomes the task's *keeper*: it
leads a process group of its own, is a child subreaper (Linux), forks the task process
(which inherits the group) and then only waits — for the task process to end, or for the
lifeline, a pipe only opus holds open for writing, to close (opus ended: exit, crash,
SIGKILL). Either way it kills every process below it, in the task's group or in a session
of its own (orphans come to it, the subreaper: it finds them all), and, if opus is gone,
its group; then it exits as the task process did (its exit code, or its signal).

The keeper runs no code of the task's nor of the program's (every signal blocked, no
handler run), so it is always there to do this — even when the task is stuck in C code
holding the GIL, or ignores every signal it can. The task process dies with its keeper
(Linux's parent-death signal, SIGKILL) if the keeper is killed on its own.

Shared by the `process` runner's task processes and the `processpool` runner's workers
(`opus_core.runners.process.TaskProcess` forks both).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36

_libc_prctl: Callable[..., int] | None = None


def prepare() -> None:
    """Look up `prctl` in the C library once, in the process that forks task processes, so
    that each child calls it without loading `ctypes`' machinery again."""
    global _libc_prctl
    if _libc_prctl is None:
        try:
            import ctypes

            _libc_prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError, ImportError):
            _libc_prctl = _no_prctl


def _no_prctl(*args: int) -> int:
    return -1


def _prctl(option: int, value: int) -> bool:  # pragma: no cover - runs in the child
    """Linux's `prctl(option, value)`; False where it fails or does not exist."""
    prepare()
    assert _libc_prctl is not None
    try:
        return int(_libc_prctl(option, value, 0, 0, 0)) == 0
    except (OSError, ValueError):
        return False


def descendants(pid: int) -> list[int]:
    """The processes below `pid` — its children, theirs, and so on — as Linux lists them
    (`/proc/PID/task/TID/children`); empty where it does not."""
    found: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for thread in threads:
            try:  # os.read, not open(): cheap in a keeper just forked (few pages touched)
                listing = os.open(f"/proc/{parent}/task/{thread}/children", os.O_RDONLY)
                try:
                    text = b""
                    while chunk := os.read(listing, 65536):
                        text += chunk
                finally:
                    os.close(listing)
                children = [int(child) for child in text.split()]
            except (OSError, ValueError):
                continue
            found.extend(children)
            stack.extend(children)
    return found


def end_descendants(pid: int) -> None:
    """Kill every process below `pid`, in its group or not (a task process is a child
    subreaper: what its children leave behind, even in a session of its own, is re-parented
    to it, so it is found here while the task process lives)."""
    for child in descendants(pid):
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass


# -- the keeper ----------------------------------------------------------------------------------


def _wait(task: int, lifeline: int) -> int | None:  # pragma: no cover - runs in the keeper
    """Wait for the task process to end (its wait status) or for opus to end (None)."""
    import select

    poller = select.poll()
    poller.register(lifeline, select.POLLIN)
    timeout: int | None = None
    try:
        ended = os.pidfd_open(task)  # readable once the task process has ended (Linux 5.3)
    except (AttributeError, OSError):
        timeout = 50  # milliseconds: look at the task process that often
    else:
        poller.register(ended, select.POLLIN)
    while True:
        events = poller.poll(timeout)
        done, status = os.waitpid(task, os.WNOHANG)
        if done:
            return status
        for fd, _ in events:
            if fd == lifeline and not os.read(lifeline, 512):
                return None  # the end of the pipe: every writer, opus, is gone


def _end_below() -> None:  # pragma: no cover - runs in the keeper
    """Kill every process below this one until none is left, reaping each.

    The keeper is a subreaper: a process whose parent is killed comes to it, so each time
    one of its children ends it looks again, and finds what was started meanwhile.
    """
    while True:
        killed = False
        for pid in descendants(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
                killed = True
            except OSError:
                pass  # ended already, or not ours to kill (then not waited for)
        try:
            reaped, _ = os.waitpid(-1, 0 if killed else os.WNOHANG)
        except ChildProcessError:
            return  # no child left
        if not killed and not reaped:
            return  # nothing below it can kill, nothing more to reap


def _exit_as(status: int | None) -> NoReturn:  # pragma: no cover - runs in the keeper
    """End this process as the task process ended (`status`, a wait status; None: code 1),
    so that opus reports the task's own exit code or signal."""
    code = 1 if status is None else os.waitstatus_to_exitcode(status)
    if code < 0:  # killed by a signal: by the same one, without a core dump of the keeper
        _prctl(_PR_SET_DUMPABLE, 0)
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except (ImportError, OSError, ValueError):
            pass
        try:
            signal.signal(-code, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # SIGKILL's and SIGSTOP's action cannot be changed
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {-code})
        os.kill(os.getpid(), -code)
        code = 128 - code  # a signal that does not end a process: as a shell says it
    os._exit(code)


def _keep(task: int, lifeline: int, own_group: bool) -> NoReturn:  # pragma: no cover - keeper
    """The keeper's whole life: wait for the task process or opus to end, kill what is below,
    and exit as the task process did."""
    status: int | None = None
    try:
        status = _wait(task, lifeline)
    except BaseException:  # never expected: the task process goes, with all it started
        pass
    try:
        if status is None:  # opus is gone: so is the task
            os.kill(task, signal.SIGKILL)
        _end_below()
        if status is None and own_group:
            os.killpg(0, signal.SIGKILL)  # its group (where there is no /proc), the keeper too
    except BaseException:
        pass
    _exit_as(status)


def become_task_process(lifeline: int, mask: set[signal.Signals]) -> None:
    """In a child just forked by `TaskProcess`: fork the task process and become its keeper
    (this returns only in the task process).

    The keeper leads a process group of its own, which the task process inherits, so
    opus's `killpg` reaches the task and what it starts. The task process starts with
    plain signal handling and the signal mask `mask`, dies with its keeper, is a child
    subreaper itself (what it starts is found while it runs) and reads `/dev/null`.
    """
    # The keeper runs no handler of the program's (the `opus` command's SIGTERM handler, say),
    # and no signal but SIGKILL ends it before it has killed what is below it.
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        os.setpgid(0, 0)  # a group of its own, so stop() can kill whatever the task starts too
        own_group = True
    except OSError:
        own_group = False
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    keeper = os.getpid()
    try:
        task = os.fork()
    except OSError as exc:  # pragma: no cover - out of processes
        print(f"opus: cannot fork the task process: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    if task:  # pragma: no cover - runs in the keeper
        _keep(task, lifeline, own_group)
    _become_task(keeper, lifeline, mask)  # pragma: no cover - runs in the task process


def _become_task(
    keeper: int, lifeline: int, mask: set[signal.Signals]
) -> None:  # pragma: no cover - runs in the task process
    """The task process's own set-up, once forked by its keeper."""
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))  # not inherited by what it forks
    if os.getppid() != keeper:  # the keeper ended before that was set
        os._exit(1)
    os.close(lifeline)  # the keeper's to watch
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # not inherited across fork either
    # The task starts with the signal handling of a plain Python program, not with what the
    # program that started it set up.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    try:  # tasks do not read the caller's terminal
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    except OSError:
        pass
