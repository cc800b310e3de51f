"""The file cache: tasks with `metadata.inputs` and `metadata.outputs` are restored when up
to date, run when anything they are made from changed — and say why."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import opus

from opus_core import ManifestError, Task, Tasks


def command(name: str, run: str, **metadata: Any) -> str:
    """A `Command` task of opus.toml."""
    fields = [f'name = "{name}"'] + [f"{key} = {json.dumps(v)}" for key, v in metadata.items()]
    return (
        f'[[tasks]]\nkind = "Command"\nversion = "v1"\n'
        f"metadata = {{ {', '.join(fields)} }}\nspec = {{ run = {json.dumps(run)} }}\n"
    )


SHOP = (
    command(
        "count",
        "mkdir -p build && cat data/*.csv | wc -l > build/count.txt",
        inputs=["data/*.csv"],
        outputs=["build/count.txt"],
    )
    + command(
        "report",
        "echo total $(cat build/count.txt) > build/report.txt",
        dependencies=["count"],
        inputs=["build/count.txt"],
        outputs=["build/report.txt"],
    )
    + command("show", "cat build/report.txt", dependencies=["report"])
)


def shop(root: Path, tasks: str = SHOP) -> Path:
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "orders.csv").write_text("a,1\nb,2\n")
    (root / "opus.toml").write_text(f'[opus]\nrunner = "sequential"\n{tasks}')
    return root


def ran(root: Path, *args: str) -> dict[str, str]:
    """`opus run --json ARGS` in `root`: each task's status."""
    result = opus("run", "--json", *args, cwd=root)
    assert result.returncode in (0, 1), result.stderr
    return {task["task"]: task["status"] for task in json.loads(result.stdout)["tasks"]}


def test_an_up_to_date_task_is_restored_and_a_changed_input_runs_it_and_what_follows(
    tmp_path: Path,
) -> None:
    root = shop(tmp_path)
    assert ran(root) == {"count": "succeeded", "report": "succeeded", "show": "succeeded"}
    # Nothing changed: the tasks with outputs are restored; `show` has none, so it runs.
    assert ran(root) == {"count": "restored", "report": "restored", "show": "succeeded"}
    (root / "data" / "orders.csv").write_text("a,1\nb,2\nc,3\n")
    assert ran(root) == {"count": "succeeded", "report": "succeeded", "show": "succeeded"}
    assert (root / "build" / "report.txt").read_text().split() == ["total", "3"]
    # A new file the glob matches is a changed input too.
    (root / "data" / "more.csv").write_text("d,4\n")
    assert ran(root)["count"] == "succeeded"
    assert (root / "build" / "report.txt").read_text().split() == ["total", "4"]


def test_explain_says_why_each_task_ran_or_was_restored_and_opus_why_says_it_later(
    tmp_path: Path,
) -> None:
    root = shop(tmp_path)
    first = opus("run", "--explain", cwd=root)
    assert "cache: 'count' ran: no saved fingerprint (no earlier successful run)" in first.stderr
    (root / "data" / "orders.csv").write_text("changed\n")
    second = opus("run", "--explain", cwd=root)
    assert second.returncode == 0, second.stderr
    lines = [line.split(" ", 2)[-1].strip() for line in second.stderr.splitlines()]
    count = next(line for line in lines if line.startswith("cache: 'count'"))
    assert count.startswith("cache: 'count' ran: input data/orders.csv changed (sha256 ")
    assert "→" in count
    report = next(line for line in lines if line.startswith("cache: 'report'"))
    assert "input build/count.txt changed" in report and "upstream count changed" in report
    why = opus("why", "count", cwd=root)
    assert why.returncode == 0, why.stderr
    assert why.stdout.startswith("count: ran: input data/orders.csv changed (sha256 ")
    third = opus("run", cwd=root)
    assert "cache:" not in third.stderr  # without --explain the decisions are DEBUG lines
    answer = json.loads(opus("why", "report", "--json", cwd=root).stdout)
    assert answer["decision"] == "restored" and answer["reason"] == "up to date"
    assert answer["command"] == "apply" and answer["context"] == "default"


def test_opus_why_of_a_task_without_outputs_or_of_no_task_is_a_usage_error(
    tmp_path: Path,
) -> None:
    root = shop(tmp_path)
    opus("run", cwd=root)
    plain = opus("why", "show", cwd=root)
    assert plain.returncode == 2
    assert plain.stderr == (
        "opus: error: task 'show' is not cached: it runs every time; give it "
        "metadata.outputs (or cache = true) for opus to restore it when it is up to date\n"
    )
    unknown = opus("why", "reprot", cwd=root)
    assert unknown.returncode == 2
    assert "no task is named 'reprot'" in unknown.stderr and "'report'" in unknown.stderr


def test_touching_an_input_or_setting_its_time_back_is_judged_by_content(
    tmp_path: Path,
) -> None:
    root = shop(tmp_path)
    ran(root)
    orders = root / "data" / "orders.csv"
    os.utime(orders, (1, 1))  # touched: new times, the same bytes
    assert ran(root)["count"] == "restored"
    # Same size, same modification time, other bytes: the change time still tells.
    before = orders.stat()
    orders.write_text("x,9\ny,8\n")
    os.utime(orders, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert orders.stat().st_size == before.st_size
    assert ran(root)["count"] == "succeeded"


def test_a_deleted_output_runs_its_task_again_and_what_follows_stays_restored(
    tmp_path: Path,
) -> None:
    root = shop(tmp_path)
    ran(root)
    (root / "build" / "count.txt").unlink()
    # count makes the same file again, so report, made from it, is still up to date.
    assert ran(root) == {"count": "succeeded", "report": "restored", "show": "succeeded"}


def test_a_task_that_fails_after_writing_its_output_is_not_taken_for_done(
    tmp_path: Path,
) -> None:
    tasks = command(
        "half",
        "echo part > out.txt; test -f ok",
        inputs=["in.txt"],
        outputs=["out.txt"],
    )
    root = shop(tmp_path, tasks)
    (root / "in.txt").write_text("1")
    (root / "ok").write_text("")
    assert ran(root) == {"half": "succeeded"}
    (root / "in.txt").write_text("2")
    (root / "ok").unlink()
    assert ran(root) == {"half": "failed"}
    assert (root / "out.txt").exists()  # a half-made output, and the old fingerprint gone:
    (root / "in.txt").write_text("1")  # even back to the inputs of the last success
    assert ran(root) == {"half": "failed"}
    (root / "ok").write_text("")
    assert ran(root) == {"half": "succeeded"}
    assert ran(root) == {"half": "restored"}


def test_force_runs_every_cached_task_or_the_named_ones(tmp_path: Path) -> None:
    root = shop(tmp_path)
    ran(root)
    assert ran(root, "--force") == {
        "count": "succeeded",
        "report": "succeeded",
        "show": "succeeded",
    }
    # Forced, count makes the same file: report, made from it, stays up to date.
    assert ran(root, "--force", "count") == {
        "count": "succeeded",
        "report": "restored",
        "show": "succeeded",
    }
    assert ran(root, "report", "-f", "report") == {"count": "restored", "report": "succeeded"}
    wrong = opus("run", "--force", "cuont", cwd=root)
    assert wrong.returncode == 2
    assert wrong.stderr == (
        "opus: error: --force cuont: no task is named 'cuont' (did you mean 'count'?)\n"
    )


def test_cache_false_opts_out_and_cache_true_caches_a_task_on_its_inputs_alone(
    tmp_path: Path,
) -> None:
    tasks = command(
        "always", "cat in.txt > a.txt", inputs=["in.txt"], outputs=["a.txt"], cache=False
    ) + command("lint", "cat in.txt > /dev/null", inputs=["in.txt"], cache=True)
    root = shop(tmp_path, tasks)
    (root / "in.txt").write_text("1")
    assert ran(root) == {"always": "succeeded", "lint": "succeeded"}
    assert ran(root) == {"always": "succeeded", "lint": "restored"}
    (root / "in.txt").write_text("2")
    assert ran(root) == {"always": "succeeded", "lint": "succeeded"}


def test_a_changed_parameter_runs_exactly_the_tasks_whose_spec_uses_it(tmp_path: Path) -> None:
    tasks = (
        command("greet", "echo ${who} > greet.txt", outputs=["greet.txt"])
        + command("other", "echo same > other.txt", outputs=["other.txt"])
        + command(
            "after",
            "cat greet.txt > after.txt",
            dependencies=["greet"],
            inputs=["greet.txt"],
            outputs=["after.txt"],
        )
    )
    root = shop(tmp_path, tasks)
    assert set(ran(root, "--set", "who=ann").values()) == {"succeeded"}
    assert set(ran(root, "--set", "who=ann").values()) == {"restored"}
    assert ran(root, "--set", "who=bob") == {
        "greet": "succeeded",
        "other": "restored",
        "after": "succeeded",
    }


def test_a_fifo_a_folder_and_a_glob_over_a_tree_as_inputs(tmp_path: Path) -> None:
    tasks = command(
        "tree", "find src -type f | sort > tree.txt", inputs=["src", "pipe"], outputs=["tree.txt"]
    ) + command("deep", "echo > deep.txt", inputs=["src/**/*.py"], outputs=["deep.txt"])
    root = shop(tmp_path, tasks)
    (root / "src" / "a" / "b").mkdir(parents=True)
    (root / "src" / "a" / "b" / "m.py").write_text("x = 1\n")
    os.mkfifo(root / "pipe")  # never opened: only regular files are read
    assert set(ran(root).values()) == {"succeeded"}
    assert set(ran(root).values()) == {"restored"}
    (root / "src" / "a" / "b" / "m.py").write_text("x = 2\n")
    assert ran(root) == {"tree": "succeeded", "deep": "succeeded"}
    (root / "src" / "notes.txt").write_text("not python\n")
    assert ran(root) == {"tree": "succeeded", "deep": "restored"}


def test_dry_run_says_what_would_be_restored_and_changes_nothing(tmp_path: Path) -> None:
    root = shop(tmp_path)
    ran(root)
    (root / "build" / "report.txt").unlink()
    plan = opus("run", "--dry-run", cwd=root)
    assert plan.returncode == 0, plan.stderr
    rows = {line.split()[1]: line.split()[-1] for line in plan.stdout.splitlines()[2:5]}
    assert rows == {"count": "restore", "report": "run", "show": "run"}
    # The dry run forgot nothing: report still runs once, and count stays restored.
    assert ran(root) == {"count": "restored", "report": "succeeded", "show": "succeeded"}


def test_cache_list_and_clear(tmp_path: Path) -> None:
    root = shop(tmp_path)
    ran(root)
    listed = json.loads(opus("cache", "list", "--json", cwd=root).stdout)
    assert [(e["task"], e["command"], e["context"]) for e in listed] == [
        ("count", "apply", "default"),
        ("report", "apply", "default"),
    ]
    assert listed[0]["outputs"] == ["build/count.txt"]
    assert list(listed[0]["inputs"]) == ["data/orders.csv"]
    cleared = opus("cache", "clear", "count", cwd=root)
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stderr == "forgot 1 cached fingerprint(s) of count\n"
    assert ran(root)["count"] == "succeeded"
    assert opus("cache", "clear", cwd=root).stderr == (
        "forgot 2 cached fingerprint(s) of every task\n"
    )
    assert opus("cache", "list", cwd=root).stdout == "nothing cached\n"
    missing = opus("cache", "clear", "nothing", cwd=root)
    assert missing.returncode == 2 and "nothing cached for 'nothing'" in missing.stderr


def test_a_task_that_succeeds_without_its_output_is_warned_about_and_runs_again(
    tmp_path: Path,
) -> None:
    root = shop(tmp_path, command("lazy", "true", outputs=["never.txt"]))
    first = opus("run", cwd=root)
    assert (
        "task 'lazy' succeeded without making its output never.txt; it will run again next time"
        in first.stderr
    )
    assert ran(root) == {"lazy": "succeeded"}


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"inputs": "data.csv"}, "metadata.inputs must be a list of strings, got 'data.csv'"),
        ({"outputs": [1]}, "metadata.outputs must be a list of strings, got [1]"),
        ({"outputs": [""]}, "each of metadata.outputs must be a path or a glob, got ''"),
        ({"cache": "yes"}, "metadata.cache must be true or false, got 'yes'"),
    ],
)
def test_inputs_outputs_and_cache_are_checked_when_the_task_is_made(
    metadata: dict[str, Any], message: str
) -> None:
    with pytest.raises(ManifestError) as raised:
        Task("Command", "v1", metadata={"name": "t", **metadata}, spec={"run": "true"})
    assert str(raised.value) == f"task 't': {message}"


def test_the_engine_restores_through_tasks_from_config(tmp_path: Path) -> None:
    root = shop(tmp_path, SHOP.replace('runner = "sequential"', ""))
    (root / "opus.toml").write_text(
        '[opus]\npersistence = "sqlite"\n'
        f'[persistence.sqlite]\npath = "{root / "state.db"}"\n' + SHOP
    )
    for expected in ("succeeded", "restored"):
        tasks = Tasks.from_config(root / "opus.toml")
        report = tasks.process_context()
        assert report["count"].status.value == expected


def test_a_task_run_without_the_cache_in_between_is_not_restored_from_before(
    tmp_path: Path,
) -> None:
    cached = command("copy", "cat in.txt > out.txt", inputs=["in.txt"], outputs=["out.txt"])
    root = shop(tmp_path, cached)
    (root / "in.txt").write_text("first")
    assert ran(root) == {"copy": "succeeded"}
    # Without outputs the task is not cached: it runs on other input, and succeeds.
    shop(root, command("copy", "cat in.txt > out.txt", inputs=["in.txt"]))
    (root / "in.txt").write_text("second")
    assert ran(root) == {"copy": "succeeded"}
    # Back as it was, and on the first input again: its fingerprint is the first run's,
    # but out.txt is the second's, so it runs.
    shop(root, cached)
    (root / "in.txt").write_text("first")
    assert ran(root, "--explain") == {"copy": "succeeded"}
    assert (root / "out.txt").read_text() == "first"
    assert ran(root) == {"copy": "restored"}


def test_an_output_another_build_rewrote_is_not_taken_for_the_one_it_made(tmp_path: Path) -> None:
    build = command(
        "build", "echo ${MODE} $(cat in.txt) > out.txt", inputs=["in.txt"], outputs=["out.txt"]
    )
    root = shop(tmp_path, build)
    (root / "in.txt").write_text("data")
    assert ran(root, "--context", "dev", "--set", "MODE=debug") == {"build": "succeeded"}
    assert ran(root, "--context", "prod", "--set", "MODE=release") == {"build": "succeeded"}
    # dev's fingerprint is what it was, but out.txt is prod's now: it runs.
    result = opus("run", "--context", "dev", "--set", "MODE=debug", "--explain", cwd=root)
    assert "cache: 'build' ran: output out.txt is not what it made" in result.stderr
    assert (root / "out.txt").read_text() == "debug data\n"


def test_a_folder_input_follows_linked_folders_once_and_a_loop_ends(tmp_path: Path) -> None:
    tasks = command(
        "folder", "cat src/main.txt src/lib/lib.txt > a.txt", inputs=["src"], outputs=["a.txt"]
    ) + command("deep", "cat src/lib/lib.txt > b.txt", inputs=["src/**/*.txt"], outputs=["b.txt"])
    root = shop(tmp_path, tasks)
    (root / "real").mkdir()
    (root / "real" / "lib.txt").write_text("v1\n")
    (root / "src").mkdir()
    (root / "src" / "main.txt").write_text("m\n")
    os.symlink("../real", root / "src" / "lib")
    os.symlink(".", root / "src" / "loop")  # a link back up: walked once, not for ever
    os.symlink(".", root / "src" / "again")
    assert ran(root) == {"folder": "succeeded", "deep": "succeeded"}
    assert ran(root) == {"folder": "restored", "deep": "restored"}
    (root / "real" / "lib.txt").write_text("v2\n")
    assert ran(root) == {"folder": "succeeded", "deep": "succeeded"}


def test_two_tasks_that_declare_one_output_are_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    tasks = command("one", "echo 1 > out.txt", outputs=["out.txt"]) + command(
        "two", "echo 2 > out.txt", outputs=["./out.txt"], dependencies=["one"]
    )
    root = shop(tmp_path, tasks)
    result = opus("run", cwd=root)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "opus: error: tasks 'one' and 'two' both declare the output ./out.txt: a file is "
        "made by one task (give one of them another output, or merge them)"
    )
    assert not (root / "out.txt").exists()


def test_a_link_to_nothing_is_no_output(tmp_path: Path) -> None:
    tasks = command(
        "latest",
        "mkdir -p build && cp in.txt build/out.txt && ln -sfn build/out.txt latest",
        inputs=["in.txt"],
        outputs=["latest"],
    )
    root = shop(tmp_path, tasks)
    (root / "in.txt").write_text("1")
    assert ran(root) == {"latest": "succeeded"}
    (root / "build" / "out.txt").unlink()  # latest now points at nothing
    assert ran(root) == {"latest": "succeeded"}


def test_resume_leaves_a_task_with_outputs_to_the_cache(tmp_path: Path) -> None:
    root = shop(tmp_path)
    ran(root)
    (root / "data" / "orders.csv").write_text("a\nb\nc\n")
    assert ran(root, "--resume")["count"] == "succeeded"
    assert (root / "build" / "count.txt").read_text().strip() == "3"


def test_cache_list_names_a_task_whose_context_has_a_colon(tmp_path: Path) -> None:
    root = shop(tmp_path)
    ran(root, "--context", "prod:eu")
    listed = json.loads(opus("cache", "list", "--json", cwd=root).stdout)
    assert {(e["task"], e["context"]) for e in listed} == {
        ("count", "prod:eu"),
        ("report", "prod:eu"),
    }
    assert opus("cache", "clear", "count", cwd=root).returncode == 0


def test_a_placeholder_in_inputs_or_outputs_is_refused_naming_it() -> None:
    with pytest.raises(ManifestError) as raised:
        Task("Command", "v1", metadata={"name": "t", "outputs": ["out-${MODE}.txt"]})
    assert str(raised.value) == (
        "task 't': metadata.outputs 'out-${MODE}.txt': ${KEY} is not substituted in inputs "
        "and outputs; name the files (a glob covers files whose names vary)"
    )


def test_opus_why_outside_a_project_says_there_is_none(tmp_path: Path) -> None:
    result = opus("why", "build", cwd=tmp_path)
    assert result.returncode == 5
    assert "no opus.toml here or in any parent folder" in result.stderr


def test_opus_why_remembers_each_task_s_last_decision_whichever_run_made_it(
    tmp_path: Path,
) -> None:
    root = shop(tmp_path)
    ran(root)
    ran(root, "count")  # a later run that decides about count alone
    answer = json.loads(opus("why", "report", "--json", cwd=root).stdout)
    assert answer["decision"] == "ran" and answer["reason"].startswith("no saved fingerprint")


def test_two_tasks_that_declare_one_output_are_refused_even_when_neither_is_cached(
    tmp_path: Path,
) -> None:
    tasks = command("one", "true", outputs=["o.txt"], cache=False) + command(
        "two", "true", outputs=["o.txt"], cache=False
    )
    result = opus("run", cwd=shop(tmp_path, tasks))
    assert result.returncode == 2 and "both declare the output o.txt" in result.stderr


def test_dry_run_with_explain_says_why_each_cached_task_would_run_or_be_restored(
    tmp_path: Path,
) -> None:
    root = shop(tmp_path)
    ran(root)
    (root / "build" / "report.txt").unlink()
    result = opus("run", "--dry-run", "--explain", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "cache: 'count' would be restored: up to date" in result.stderr
    assert "cache: 'report' would run: output build/report.txt missing" in result.stderr
