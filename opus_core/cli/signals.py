"""Stopping `opus`: Ctrl-C and SIGTERM, the grace a stop has, and the exit status it ends with.

`main` catches the stop signals for as long as a command runs (`stop_signals`); a command's
handler asks `interrupted_status()` for its exit status, and `exit_leaving_threads` ends
opus when task threads it cannot kill would keep it alive. Its own module, so that
commands import it without importing the package that dispatches them.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

INTERRUPTED = 130
TERMINATED = 143
_terminated = False
_signals = 0


def interrupted_status() -> int:
    """The exit status of a run that was stopped: 143 after SIGTERM, 130 after Ctrl-C."""
    return TERMINATED if _terminated else INTERRUPTED


def _on_stop_signal(signum: int, frame: object) -> None:
    # Ctrl-C and SIGTERM (docker stop, systemd, a CI time-out) stop opus the same way:
    # running work is stopped, records are kept, the summary is printed; only the exit
    # status differs. A second signal while that happens is ignored — raised again, it
    # would cut the clean-up short — and a third ends opus at once; so does the end of
    # the grace (`stop_grace`) when the clean-up itself hangs (a plugin's hook, say).
    global _terminated, _signals
    _signals += 1
    if _signals == 1:
        _terminated = signum == signal.SIGTERM
        threading.Thread(target=_stop_deadline, name="opus-stop", daemon=True).start()
        raise KeyboardInterrupt
    if _signals >= 3:
        sys.stderr.write("opus: stopped without cleaning up (a third signal)\n")
        sys.stderr.flush()
        os._exit(interrupted_status())


STOP_GRACE_ENV = "OPUS_STOP_GRACE"
STOP_GRACE = 10.0
"""Seconds `opus` has, after the first Ctrl-C or SIGTERM, to stop cleanly (`$OPUS_STOP_GRACE`
changes it); past them it says what it was waiting for and exits anyway."""

_stopped = threading.Event()  # set when main() returns: the stop ended in time
_callers_threads: frozenset[threading.Thread] = frozenset()  # running when main() was called


def env_seconds(name: str, default: float, least: float = 0.0) -> float:
    """The environment variable `name` as a finite number of seconds above `least` (or equal
    to 0 when `least` is 0), else `default`."""
    try:
        seconds = float(os.environ.get(name, default))
    except ValueError:
        return default
    if seconds == least == 0.0 or least < seconds < float("inf"):
        return seconds
    return default


def stop_grace() -> float:
    """`$OPUS_STOP_GRACE` if it is a positive number of seconds, else `STOP_GRACE`."""
    return env_seconds(STOP_GRACE_ENV, STOP_GRACE, least=1e-9)


def _stop_deadline() -> None:
    """After the first stop signal: end opus if stopping takes longer than the grace."""
    grace = stop_grace()
    if _stopped.wait(grace):
        return
    from opus_core.plugin.guard import ACTIVE

    main = threading.main_thread().ident
    active = ACTIVE.get(main) if main is not None else None
    what = f"plugin {active[0]!r} in {active[1]}" if active else "the running tasks to stop"
    sys.stderr.write(
        f"opus: still stopping after {grace:g}s, waiting for {what}; "
        "exiting without finishing the clean-up\n"
    )
    sys.stderr.flush()
    os._exit(interrupted_status())


def exit_leaving_threads(status: int) -> None:
    """End opus now with `status` if task threads it stopped waiting for still run.

    A Python thread cannot be killed: a task that timed out or was stopped on a
    thread runner runs on, and the interpreter would wait for it at exit — for
    ever, if it never returns. The run is over and its records are saved, so
    opus exits and leaves those threads behind, saying so. Threads that already ran
    when `main()` was called are those of the program that called it, not task threads:
    they are not counted.
    """
    main = threading.main_thread()
    left = [
        t
        for t in threading.enumerate()
        if t is not main and not t.daemon and t.is_alive() and t not in _callers_threads
    ]
    if not left:
        return
    from opus_core.command_tasks import kill_running_commands

    kill_running_commands()  # the threads are left behind; the commands they wait for are not
    sys.stderr.write(
        f"opus: {len(left)} task thread(s) that cannot be killed were still running; "
        "exiting without waiting for them\n"
    )
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)


@contextmanager
def stop_signals() -> Iterator[None]:
    """Within it, the first Ctrl-C or SIGTERM raises `KeyboardInterrupt` (`_on_stop_signal`);
    at its end the grace of a stop is over and the handlers are put back as they were."""
    global _terminated, _signals, _callers_threads
    _terminated, _signals = False, 0
    _callers_threads = frozenset(threading.enumerate())
    _stopped.clear()
    saved = None
    if threading.current_thread() is threading.main_thread():
        saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGTERM, _on_stop_signal)
        signal.signal(signal.SIGINT, _on_stop_signal)
    try:
        yield
    finally:
        _stopped.set()
        if saved is not None:  # as they were, for a program that called main() itself
            signal.signal(signal.SIGTERM, saved[0])
            signal.signal(signal.SIGINT, saved[1])
