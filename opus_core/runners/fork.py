"""What a task process does to itself once forked: its own process group and signal handling,
death with the process that started it, and the end of everything it started.

Shared by the `process` runner's task processes and the `processpool` runner's workers
(`opus_core.runners.process.TaskProcess` forks both).
"""

from __future__ import annotations

import os
import signal
import threading

_PARENT_GONE = getattr(signal, "SIGRTMIN", signal.SIGUSR2) + 2  # a real-time signal nobody uses


def _die_with_parent(
    read_end: int, parent: int, own_group: bool
) -> None:  # pragma: no cover - runs in the child
    """Arrange for this task's process group to be killed when the parent ends.

    On Linux the lifeline is reopened (a description of its own) and set to send
    SIGIO to the group when it changes — which happens only when the parent's
    end closes; SIGIO's default action ends each process of the group at once,
    even one blocked in C code. Elsewhere a thread waits for the end of file.
    """
    try:
        import fcntl

        own = os.open(f"/proc/self/fd/{read_end}", os.O_RDONLY)
        # The group this process leads; never a group it shares with others.
        fcntl.fcntl(own, fcntl.F_SETOWN, -os.getpid() if own_group else os.getpid())
        fcntl.fcntl(own, fcntl.F_SETFL, os.O_RDONLY | os.O_ASYNC)
    except (OSError, ImportError, AttributeError, ValueError):
        waiter = threading.Thread(target=_wait_for_parent, args=(read_end, own_group), daemon=True)
        waiter.start()
        return
    if os.getppid() != parent:  # the parent ended before the signal was armed
        if own_group:
            os.killpg(0, signal.SIGKILL)
        os._exit(1)


def _parent_death_signal(own_group: bool) -> None:  # pragma: no cover - runs in the child
    """Linux's PR_SET_PDEATHSIG, for a task that ignores SIGIO: a signal when the thread that
    forked this process ends, whose handler kills the task's group.

    Set only for forks made by the main thread, whose end is the program's. The signal
    is handled (not SIGKILL) so that the whole group goes: the task's own death would
    otherwise close the lifeline description SIGIO is armed on before the kernel sends it.
    """

    def parent_gone(signum: int, frame: object) -> None:
        end_descendants(os.getpid())
        if own_group:
            os.killpg(0, signal.SIGKILL)
        os._exit(1)

    try:
        import ctypes

        signal.signal(_PARENT_GONE, parent_gone)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(_PARENT_GONE), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError, ImportError, ValueError):
        pass


def _wait_for_parent(read_end: int, own_group: bool) -> None:  # pragma: no cover - in the child
    try:
        while os.read(read_end, 1):
            pass
    except OSError:
        pass
    if own_group:  # the parent is gone: so are this task and what it started
        os.killpg(0, signal.SIGKILL)
    os._exit(1)


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
            try:
                with open(f"/proc/{parent}/task/{thread}/children") as listing:
                    children = [int(child) for child in listing.read().split()]
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


def _subreaper() -> None:  # pragma: no cover - runs in the child
    """Make this process a child subreaper (Linux's PR_SET_CHILD_SUBREAPER): orphans below
    it are re-parented to it rather than to init, so `end_descendants` finds them."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # 36: PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError, ImportError):
        pass


def become_task_process(
    lifeline: int, parent: int, main_thread: bool, mask: set[signal.Signals]
) -> None:  # pragma: no cover - runs in the child
    """In a child just forked by `TaskProcess`: the set-up every task process shares.

    Plain signal handling with `mask`; a process group of its own; death with the
    parent (lifeline, parent-death signal); stdin on `/dev/null`.
    """
    # The task starts with the signal handling of a plain Python program, not with what the
    # program that started it set up (the `opus` command's SIGTERM handler, say).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    try:
        os.setpgid(0, 0)  # a group of its own, so stop() can kill whatever it starts too
        own_group = True
    except OSError:
        own_group = False
    _subreaper()
    if main_thread:
        _parent_death_signal(own_group)
    _die_with_parent(lifeline, parent, own_group)
    try:  # tasks do not read the caller's terminal
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    except OSError:
        pass
