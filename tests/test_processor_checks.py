"""What registering a processor checks: its versions, its commands and how `process_task` is
called (keyword arguments), each refused in one line naming what to change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_helpers import one_line_error, opus

from opus_core import KeyValueStore, Task, TaskProcessor, Tasks
from opus_core.errors import ManifestError, OpusError

KEYWORDS = "task, command, context, key_value_store, state_persistence"


# -- versions and commands ------------------------------------------------------


def test_kind_versions_as_a_class_attribute_sets_the_versions_handled() -> None:
    class Seedling(TaskProcessor):
        kind = "Seedling"
        kind_versions = ["v1", "v2"]

        def process_task(self, task, command, context, key_value_store, state_persistence):
            return {task.version: "done"}

    assert Seedling.versions == ("v1", "v2")
    tasks = Tasks()
    tasks.register_task_processor(Seedling)
    tasks.add_task(Task(kind="Seedling", version="v2", metadata={"name": "two"}))
    assert tasks.process_context().ok
    assert tasks.key_value_store.store["v2"] == "done"
    assert Seedling().kind_versions == ("v1", "v2")


def test_supported_commands_as_a_class_attribute_sets_the_commands() -> None:
    class Seedling(TaskProcessor):
        kind = "Seedling"
        supported_commands = ("apply", "rollout")

        def process_task(self, task, command, context, key_value_store, state_persistence):
            return {"ran": command}

    assert Seedling.commands == ("apply", "rollout")
    tasks = Tasks()
    tasks.register_task_processor(Seedling)
    tasks.add_task(Task(kind="Seedling", version="v1", metadata={"name": "one"}))
    assert tasks.process_context(command="rollout").ok
    assert tasks.key_value_store.store["ran"] == "rollout"
    assert [t.task_id for t in tasks.plan(command="get").tasks] == []


def test_the_seeds_names_set_in_init_set_versions_and_commands() -> None:
    class Seedling(TaskProcessor):
        def __init__(self) -> None:
            super().__init__(kind="Seedling")
            self.kind_versions = ["v3"]
            self.supported_commands = ["apply"]

    processor = Seedling()
    assert (processor.versions, processor.commands) == (("v3",), ("apply",))


def test_a_class_setting_both_names_is_refused_naming_both() -> None:
    with pytest.raises(OpusError, match="Both sets both versions and kind_versions"):
        type(
            "Both",
            (TaskProcessor,),
            {"kind": "Both", "versions": ("v1",), "kind_versions": ("v2",)},
        )


def test_kind_versions_as_a_string_is_refused_by_its_own_name() -> None:
    with pytest.raises(OpusError, match="Odd.kind_versions must be a list of version strings"):
        type("Odd", (TaskProcessor,), {"kind": "Odd", "kind_versions": "v1"})


def test_a_task_of_another_version_is_told_how_to_add_it() -> None:
    class Deploy(TaskProcessor):
        kind = "Deploy"

        def process_task(self, task, command, context, key_value_store, state_persistence):
            return None

    tasks = Tasks()
    tasks.register_task_processor(Deploy)
    with pytest.raises(ManifestError) as caught:
        tasks.add_task(Task(kind="Deploy", version="v2", metadata={"name": "web"}))
    assert str(caught.value) == (
        "task 'web': no processor for kind 'Deploy' version 'v2'; its processor handles "
        'versions v1; to add one, set `versions = ("v1", "v2")` on the processor class (Deploy)'
    )


# -- the signature of process_task ---------------------------------------------


def registered(body: str) -> TaskProcessor:
    """A processor whose class body is `body`, registered with a fresh engine."""
    namespace: dict[str, Any] = {"TaskProcessor": TaskProcessor}
    exec(f"class Checked(TaskProcessor):\n    kind = 'Checked'\n{body}", namespace)
    processor: TaskProcessor = namespace["Checked"]()
    Tasks().register_task_processor(processor)
    return processor


def refusal(body: str) -> str:
    with pytest.raises(OpusError) as caught:
        registered(body)
    message = str(caught.value)
    assert "\n" not in message
    assert message.endswith(f"opus calls it with keyword arguments {KEYWORDS}")
    return message


def test_short_parameter_names_are_refused_naming_what_to_call_them() -> None:
    message = refusal(
        "    def process_task(self, task, command, context, kvs, sp):\n        return None\n"
    )
    assert message.startswith("builtins.Checked.process_task: parameter 'kvs' does not match")
    assert "rename 'kvs' to 'key_value_store', 'sp' to 'state_persistence'" in message


def test_missing_parameters_are_named() -> None:
    message = refusal("    def process_task(self, task, command):\n        return None\n")
    assert "no parameters 'context', 'key_value_store', 'state_persistence'" in message
    assert "add them, or take **kwargs" in message


def test_a_parameter_that_is_never_passed_is_named() -> None:
    message = refusal(
        "    def process_task(self, task, command, context, key_value_store,\n"
        "                     state_persistence, region):\n        return None\n"
    )
    assert "parameter 'region' is never passed: give it a default, or remove it" in message


def test_a_positional_only_parameter_is_named() -> None:
    message = refusal(
        "    def process_task(self, task, /, command, context, key_value_store,\n"
        "                     state_persistence):\n        return None\n"
    )
    assert "parameter 'task' is positional-only" in message


def test_an_async_process_task_is_checked_too() -> None:
    message = refusal(
        "    async def process_task(self, task, command, context, store, state):\n"
        "        return None\n"
    )
    assert "rename 'store' to 'key_value_store'" in message


@pytest.mark.parametrize(
    "signature",
    [
        "self, task, command, context, key_value_store, state_persistence",
        "self, task, command, **kwargs",
        "self, **kwargs",
        "self, task, command, context='default', key_value_store=None, state_persistence=None",
        "self, task, command, context, key_value_store, state_persistence, region='eu'",
        "self, task, *args, command, context, key_value_store, state_persistence",
        "self, task, command, context, key_value_store, state_persistence, *, dry=False",
    ],
)
def test_signatures_that_take_the_keyword_arguments_are_accepted(signature: str) -> None:
    processor = registered(f"    def process_task({signature}):\n        return {{'ok': 1}}\n")
    tasks = Tasks()
    tasks.register_task_processor(processor)
    tasks.add_task(Task(kind="Checked", version="v1", metadata={"name": "a"}))
    assert tasks.process_context().ok
    assert tasks.key_value_store.store["ok"] == 1


def test_the_base_class_and_the_seeds_defaults_are_accepted() -> None:
    class Seed(TaskProcessor):
        def process_task(
            self,
            task: Task,
            command: str,
            context: str = "default",
            key_value_store: KeyValueStore | None = None,
            state_persistence: Any = None,
        ) -> None:
            return None

    Tasks().register_task_processor(Seed(kind="Seed"))
    Tasks().register_task_processor(TaskProcessor(kind="Base"))


BAD_MODULE = """\
from opus_core import TaskProcessor


class Deploy(TaskProcessor):
    kind = "Deploy"

    def process_task(self, task, command, context, kvs, sp):
        return None
"""


def test_opus_run_with_a_processor_of_the_wrong_signature_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "deploy.py").write_text(BAD_MODULE)
    (tmp_path / "opus.toml").write_text(
        '[opus]\nprocessors = ["deploy:Deploy"]\n\n'
        '[[tasks]]\nkind = "Deploy"\nversion = "v1"\nmetadata = { name = "web" }\n'
    )
    message = one_line_error(opus("run", cwd=tmp_path))
    assert "deploy.Deploy.process_task: parameter 'kvs' does not match" in message
    assert "rename 'kvs' to 'key_value_store', 'sp' to 'state_persistence'" in message
