"""Telling the driver's own process apart from the cluster's."""

from __future__ import annotations

import os

PROCESS_TOKEN = os.urandom(16).hex()
"""Made once per process. A plugin carries the driver's; where it finds the same one,
it runs inside the driver (a `LocalCluster`'s scheduler, or its workers with
`processes = false`), whose modules and loggers are the driver's own."""
