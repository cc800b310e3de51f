"""The Task manifest: ids, checksums and metadata validation."""

from __future__ import annotations

import pytest

from opus_core import ManifestError, Task


def test_task_id_is_the_name_when_given() -> None:
    assert Task("Kind", "v1", metadata={"name": "web"}).task_id == "web"


def test_unnamed_task_id_is_the_manifest_checksum() -> None:
    a = Task("Kind", "v1", spec={"x": 1})
    b = Task("Kind", "v1", spec={"x": 1})
    c = Task("Kind", "v1", spec={"x": 2})
    assert a.task_id == a.checksum == b.checksum
    assert len(a.checksum) == 64
    assert a.checksum != c.checksum


def test_checksum_ignores_key_order_but_not_content() -> None:
    a = Task("Kind", "v1", spec={"a": 1, "b": 2}, metadata={"name": "n"})
    b = Task("Kind", "v1", spec={"b": 2, "a": 1}, metadata={"name": "n"})
    assert a.checksum == b.checksum
    assert Task("Kind", "v2", spec={"a": 1, "b": 2}, metadata={"name": "n"}).checksum != a.checksum


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "", "version": "v1"}, "non-empty string kind"),
        ({"kind": None, "version": "v1"}, "non-empty string kind"),
        ({"kind": "K", "version": ""}, "version must be a non-empty string"),
        ({"kind": "K", "version": "v1", "spec": ["x"]}, "spec must be a table"),
        ({"kind": "K", "version": "v1", "metadata": {"name": 3}}, "metadata.name must be"),
        (
            {"kind": "K", "version": "v1", "metadata": {"name": "x\udc80"}},
            "is not valid Unicode text",
        ),
        ({"kind": "K", "version": "v1", "metadata": {"nmae": "x"}}, "unknown metadata key 'nmae'"),
        (
            {"kind": "K", "version": "v1", "metadata": {"name": "t", "retries": -1}},
            "task 't': metadata.retries",
        ),
        ({"kind": "K", "version": "v1", "metadata": {"retries": "2"}}, "metadata.retries"),
        ({"kind": "K", "version": "v1", "metadata": {"retries": True}}, "metadata.retries"),
        (
            {"kind": "K", "version": "v1", "metadata": {"timeout": 0}},
            "metadata.timeout must be greater than 0",
        ),
        (
            {"kind": "K", "version": "v1", "metadata": {"timeout": "soon"}},
            "metadata.timeout must be a number",
        ),
        (
            {"kind": "K", "version": "v1", "metadata": {"retry_sleep_time": -1}},
            "retry_sleep_time must be at least 0",
        ),
        (
            {"kind": "K", "version": "v1", "metadata": {"labels": {"a": 1}}},
            "metadata.labels must be a table",
        ),
        (
            {"kind": "K", "version": "v1", "metadata": {"dependencies": "db"}},
            "dependencies must be a list",
        ),
        (
            {"kind": "K", "version": "v1", "metadata": {"dependencies": [3]}},
            "each dependency must be",
        ),
        (
            {"kind": "K", "version": "v1", "metadata": {"dependencies": [{"label": {"a": "b"}}]}},
            "each dependency must be",
        ),
        (
            {"kind": "K", "version": "v1", "metadata": {"dependencies": [{"labels": {}}]}},
            "at least one label",
        ),
        (
            {"kind": "K", "version": "v1", "metadata": {"contexts": "dev"}},
            "metadata.contexts must be a list of strings",
        ),
        ({"kind": "K", "version": "v1", "metadata": {"contexts": []}}, "would never run"),
    ],
)
def test_bad_manifests_are_rejected_with_the_key_at_fault(kwargs: dict, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        Task(**kwargs)


def test_error_names_the_task_by_name_or_kind() -> None:
    with pytest.raises(ManifestError, match="task 'web'"):
        Task("Deploy", "v1", metadata={"name": "web", "timeout": -5})
    with pytest.raises(ManifestError, match="task of kind 'Deploy'"):
        Task("Deploy", "v1", metadata={"timeout": -5})


def test_seed_style_positional_and_keyword_construction() -> None:
    task = Task(kind="HelloWorld", version="v1", spec={"file": "x"})
    assert (task.kind, task.version, task.spec, task.metadata) == (
        "HelloWorld",
        "v1",
        {"file": "x"},
        {},
    )
