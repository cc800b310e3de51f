"""The old home of `TaskStatus`, `TaskResult`, `TaskResults` and `RunReport`, which live in
`opus_core.results` ("report" is the HTML report, `opus_core.html_report`)."""

from opus_core.results import (
    STATUS_CODE,
    STATUSES,
    RunReport,
    TaskResult,
    TaskResults,
    TaskStatus,
)

__all__ = ["STATUSES", "STATUS_CODE", "RunReport", "TaskResult", "TaskResults", "TaskStatus"]
