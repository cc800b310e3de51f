"""The process's connection to Ray, shared by the runners that use it.

A Python process is the driver of at most one Ray cluster at a time (`ray.init`). The
first `RayRunner` to start connects (or starts a local Ray) with its settings; runners
started meanwhile with the same settings share the connection, and the last one to shut
down disconnects — which stops a local Ray that `connect` started, and only ends this
driver's job on a cluster it connected to (the cluster runs on). If the program called
`ray.init` itself, the runners use that connection and never end it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from opus_core import OpusError


class RayConnectionError(OpusError):
    """The Ray cluster at the configured address could not be reached or started."""


@dataclass(frozen=True, slots=True)
class Settings:
    """What a runner connects with (its options that concern the connection)."""

    address: str | None
    """`None` (start a local Ray), `"auto"`, `"host:port"` or `"ray://host:10001"`."""
    num_cpus: int | None
    """CPUs of a local Ray (None: the machine's)."""
    runtime_env: dict[str, Any] = field(default_factory=dict, hash=False)
    """The job's runtime environment (the user's modules are added to its `py_modules`)."""
    init_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)
    """Anything else `ray.init` takes."""

    def init_arguments(self, modules: list[str]) -> dict[str, Any]:
        """The keyword arguments of `ray.init`, `modules` added to the job's `py_modules`."""
        import logging

        arguments: dict[str, Any] = {
            "address": "local" if self.address is None else self.address,
            "log_to_driver": False,  # the runner sends each task's output back itself
            "logging_level": logging.WARNING,
        }
        if self.address is None:
            arguments["include_dashboard"] = False
            if self.num_cpus is not None:
                arguments["num_cpus"] = self.num_cpus
        runtime_env = dict(self.runtime_env)
        if modules:
            runtime_env["py_modules"] = [*runtime_env.get("py_modules", []), *modules]
        if runtime_env:
            arguments["runtime_env"] = runtime_env
        arguments.update(self.init_kwargs)
        return arguments


CONNECT_TIMEOUT = 10.0
"""Seconds to wait for the cluster's address to answer before `ray.init` is called: Ray
itself retries an address where nothing listens for minutes."""


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise `RayConnectionError` unless something listens at `address` (`host:port` or
    `ray://host:port`; `"auto"` is left to Ray, which finds the cluster of this machine)."""
    import socket

    where = address.removeprefix("ray://")
    host, _, port = where.rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayConnectionError(
            f"cannot connect to the Ray cluster at {address}: {exc}; check that "
            "`ray start --head` runs there and that the address is right"
        ) from None


_lock = threading.Lock()
_users = 0
_ours: Settings | None = None  # what `connect` connected with, when it called ray.init


def connect(settings: Settings, modules: list[str]) -> bool:
    """Connect this process to Ray as `settings` say, sending the paths `modules` to the
    workers (see `opus_plugin_ray.modules`), or share the connection it has; True if this
    call (or an earlier runner's) made the connection, False if the program's own
    `ray.init` did (then `modules` are not sent)."""
    global _users, _ours
    import ray

    with _lock:
        if _users and _ours is not None and _ours != settings:
            raise RayConnectionError(
                f"this process is already connected to Ray by a runner with other settings "
                f"({_describe(_ours)}), and a process drives one Ray cluster at a time; "
                "give every ray runner of a program the same options"
            )
        if not ray.is_initialized():
            if settings.address is not None:
                check_reachable(settings.address)
            try:
                ray.init(**settings.init_arguments(modules))
            except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
                where = settings.address or "a local Ray"
                raise RayConnectionError(
                    f"cannot connect to the Ray cluster at {where}: {exc}; check that "
                    "`ray start --head` runs there and that the address is right"
                ) from None
            _ours = settings
        _users += 1
        return _ours is not None


def disconnect() -> None:
    """A runner is done with the connection: the last one ends it, if `connect` made it."""
    global _users, _ours
    with _lock:
        _users = max(0, _users - 1)
        if _users or _ours is None:
            return
        _ours = None
        import ray

        ray.shutdown()


def _describe(settings: Settings) -> str:
    where = settings.address or "a local Ray"
    return where if settings.num_cpus is None else f"{where}, num_cpus={settings.num_cpus}"
