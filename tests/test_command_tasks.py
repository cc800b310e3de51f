"""`Command` tasks: shell steps in opus.toml, with no Python, through the real `opus run`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from cli_helpers import OPUS, interruptible, opus
from harness import alive, until

RUNNERS = ["sequential", "process", "processpool", "threadpool"]

PUBLISHER = """
from opus_core import TaskFailedError, TaskProcessor


class Publish(TaskProcessor):
    kind = "Publish"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        return dict(task.spec)


class Refuse(TaskProcessor):
    kind = "Refuse"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        raise TaskFailedError(task.spec["why"])
"""


def project(root: Path, tasks: str, runner: str = "sequential") -> Path:
    (root / "publish.py").write_text(PUBLISHER)
    (root / "opus.toml").write_text(
        f'[opus]\nrunner = "{runner}"\npersistence = "memory"\n'
        'processors = ["publish:Publish", "publish:Refuse"]\n' + tasks
    )
    return root


def command(name: str, spec: str, metadata: str = "") -> str:
    return (
        f'[[tasks]]\nkind = "Command"\nversion = "v1"\n'
        f'metadata = {{ name = "{name}"{metadata} }}\nspec = {spec}\n'
    )


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_pipeline_of_shell_steps_runs_and_logs_each_line_under_its_task(
    tmp_path: Path, runner: str
) -> None:
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "index.html").write_text("<p>hi</p>")
    tasks = (
        '[[tasks]]\nkind = "Publish"\nversion = "v1"\n'
        'metadata = { name = "settings" }\nspec = { who = "world" }\n'
        + command(
            "hello",
            '{ run = "echo hello $WHO from ${who}; echo careful >&2", env = { WHO = "you" } }',
            ', dependencies = ["settings"]',
        )
        + command("list", '{ run = ["ls", "-1"], cwd = "web" }', ', dependencies = ["hello"]')
        + command(
            "argv",
            '{ run = ["printf", "%s|", "a b; echo injected", "$HOME"] }',
            ', dependencies = ["list"]',
        )
    )
    result = opus("run", cwd=project(tmp_path, tasks, runner))
    assert result.returncode == 0, result.stderr
    assert "4 succeeded" in result.stdout
    lines = result.stderr.splitlines()
    assert any(line.endswith("INFO    hello: hello you from world") for line in lines)
    assert any(line.endswith("INFO    hello: careful") for line in lines)
    assert any(line.endswith("INFO    list: index.html") for line in lines)
    # a list is argv: no shell splits, expands or runs anything in it
    assert any(line.endswith("INFO    argv: a b; echo injected|$HOME|") for line in lines)


@pytest.mark.parametrize("runner", ["sequential", "threadpool"])
def test_a_failing_command_fails_its_task_with_the_status_and_the_end_of_stderr(
    tmp_path: Path, runner: str
) -> None:
    script = "echo out; for i in $(seq 1 30); do echo line $i >&2; done; exit 3"
    tasks = command("build", f'{{ run = "{script}" }}') + command(
        "ship", '{ run = "touch shipped" }', ', dependencies = ["build"]'
    )
    result = opus("run", cwd=project(tmp_path, tasks, runner))
    assert result.returncode == 1
    assert "command of task 'build' exited with status 3; last lines of stderr" in result.stdout
    assert "line 30" in result.stdout and "line 11" in result.stdout
    assert "line 10\n" not in result.stdout  # the last 20 lines, not all of them
    assert "skipped" in result.stdout
    assert not (tmp_path / "shipped").exists()
    # the message says it all: no traceback of opus's own frames
    assert "Traceback" not in result.stdout
    failures = result.stdout.split(" FAILURES ")[1]
    assert "command of task 'build' exited with status 3" in failures


def test_a_processor_raising_task_failed_error_fails_with_its_message_alone(
    tmp_path: Path,
) -> None:
    tasks = '[[tasks]]\nkind = "Refuse"\nversion = "v1"\nmetadata = { name = "deploy" }\n'
    tasks += 'spec = { why = "quota exceeded in eu-west-1" }\n'
    result = opus("run", cwd=project(tmp_path, tasks))
    assert result.returncode == 1
    assert "deploy  failed" in result.stdout
    assert "quota exceeded in eu-west-1" in result.stdout.split(" FAILURES ")[1]
    assert "Traceback" not in result.stdout


def test_runs_show_one_task_of_a_run(tmp_path: Path) -> None:
    tasks = command("first", '{ run = "true" }') + command(
        "broken", '{ run = "echo oops >&2; exit 4" }', ', dependencies = ["first"], retries = 1'
    )
    root = project(tmp_path, tasks)
    toml = (root / "opus.toml").read_text().replace('"memory"', '"sqlite"')
    (root / "opus.toml").write_text(toml)
    assert opus("run", cwd=root).returncode == 1
    shown = opus("runs", "show", "latest", "broken", cwd=root)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "task:         broken (Command)"
    assert "status:       failed" in lines
    assert "attempts:     2" in lines
    assert "dependencies: first" in lines
    assert any(line.startswith("ready:") and "waited" in line for line in lines)
    attempts = [line for line in lines if line.startswith("  ") and ". failed at " in line]
    assert len(attempts) == 2 and "exited with status 4" in attempts[0]
    as_json = json.loads(opus("runs", "show", "latest", "broken", "--json", cwd=root).stdout)
    assert as_json["name"] == "broken" and as_json["dependencies"] == ["first"]
    assert as_json["attempt_log"][0]["started_at"].endswith("+00:00")  # ISO 8601, UTC
    missing = opus("runs", "show", "latest", "borken", cwd=root)
    assert missing.returncode == 2
    assert "has no task 'borken' (did you mean 'broken'?)" in missing.stderr


def test_a_command_killed_by_a_signal_says_which(tmp_path: Path) -> None:
    result = opus("run", cwd=project(tmp_path, command("x", '{ run = "kill -TERM $$$$" }')))
    assert result.returncode == 1
    assert "command of task 'x' was killed by SIGTERM" in result.stdout


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_timeout_kills_the_command_and_all_it_started(tmp_path: Path, runner: str) -> None:
    script = "sleep 300 & echo $! > child.pid; sleep 300"
    tasks = command("slow", f'{{ run = "{script}" }}', ", timeout = 1")
    # On threadpool the task's thread may still be ending when the run is: opus then exits
    # without waiting for it (os._exit), which only a process of its own can do.
    result = opus("run", cwd=project(tmp_path, tasks, runner), process=runner == "threadpool")
    assert result.returncode == 1
    assert "1 timed_out" in result.stdout, result.stdout
    child = int((tmp_path / "child.pid").read_text())
    assert until(lambda: not alive(child)), "the command's child outlived the timeout"


def test_what_a_command_leaves_running_in_its_group_is_killed_when_it_ends(
    tmp_path: Path,
) -> None:
    script = "sleep 300 > /dev/null 2>&1 & echo $! > child.pid"
    result = opus("run", cwd=project(tmp_path, command("leaves", f'{{ run = "{script}" }}')))
    assert result.returncode == 0, result.stderr
    child = int((tmp_path / "child.pid").read_text())
    assert until(lambda: not alive(child))


def test_ctrl_c_kills_the_running_command_and_all_it_started(tmp_path: Path) -> None:
    script = "sleep 300 & echo $! > child.pid; echo waiting; sleep 300"
    root = project(tmp_path, command("slow", f'{{ run = "{script}" }}'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env["XDG_CONFIG_HOME"] = str(root / ".user-config")
    env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT shows where every thread of opus is
    run = interruptible([str(OPUS), "run"], cwd=root, env=env)
    try:
        assert run.stderr is not None
        for line in run.stderr:  # opus logs the command's line: it is waiting for it
            if line.endswith("slow: waiting\n"):
                break
        run.send_signal(signal.SIGINT)
        try:
            _, err = run.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGABRT)
            _, err = run.communicate(timeout=60)
            pytest.fail(f"opus did not stop after Ctrl-C; its threads:\n{err}")
    finally:
        run.kill()
    assert run.returncode == 130, err
    assert until(lambda: not alive(int((root / "child.pid").read_text())))


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("{ run = 3 }", "task 'bad': spec.run must be a command line"),
        ("{ run = [] }", "task 'bad': spec.run must be a command line"),
        ('{ run = "  " }', "task 'bad': spec.run must be a command line"),
        ('{ run = ["true", [1]] }', "task 'bad': spec.run must be a command line"),
        ("{ run = [3] }", "command of task 'bad' could not start"),
        ("{}", "task 'bad': spec.run must be a command line"),
        ('{ run = "true", env = { X = [1] } }', "spec.env.X must be a string, a number"),
        ('{ run = "true", env = "X=1" }', "spec.env must be a table"),
        ('{ run = "true", cwd = "nowhere" }', "spec.cwd 'nowhere' is not a folder"),
        ('{ run = ["no-such-program-here"] }', "command of task 'bad' could not start"),
    ],
)
def test_a_bad_command_spec_fails_its_task_naming_what_to_fix(
    tmp_path: Path, spec: str, error: str
) -> None:
    result = opus("run", cwd=project(tmp_path, command("bad", spec)))
    assert result.returncode == 1
    assert error in result.stdout, result.stdout


def test_env_values_may_be_numbers_and_booleans(tmp_path: Path) -> None:
    spec = '{ run = "echo $PORT $DEBUG $RATIO", env = { PORT = 8080, DEBUG = true, RATIO = 0.5 } }'
    result = opus("run", cwd=project(tmp_path, command("env", spec)))
    assert result.returncode == 0, result.stderr
    assert "env: 8080 true 0.5" in result.stderr


def test_hostile_output_is_logged_escaped_and_in_pieces(tmp_path: Path) -> None:
    script = r"printf 'clear\033[2J\r\n'; yes a | head -c 400000 | tr -d '\n'; echo"
    result = opus("run", cwd=project(tmp_path, command("noisy", f"{{ run = '''{script}''' }}")))
    assert result.returncode == 0, result.stderr
    assert "noisy: clear\\x1b[2J" in result.stderr
    assert "\x1b" not in result.stderr
    pieces = [line for line in result.stderr.splitlines() if "noisy: aaaa" in line]
    assert len(pieces) == 4  # 200,000 bytes in lines of at most 64 KiB
    assert sum(line.count("a") for line in pieces) == 200_000


def test_command_tasks_run_only_for_apply(tmp_path: Path) -> None:
    result = opus(
        "run", "--command", "delete", cwd=project(tmp_path, command("x", '{ run = "touch ran" }'))
    )
    assert result.returncode == 5
    assert not (tmp_path / "ran").exists()


def test_set_gives_placeholders_their_values_as_toml_values_or_text(tmp_path: Path) -> None:
    tasks = command(
        "greet",
        '{ run = ["printf", "%s|%s|%s|%s", "${who}", "${n}", "${flag}", "list=${list}"] }',
    )
    root = project(tmp_path, tasks)
    result = opus(
        "run",
        "--set",
        "who=the shell; rm -rf /",
        "--set",
        "n=3",
        "--set",
        "flag=true",
        "--set",
        "list=[1, 2]",
        cwd=root,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # a whole ${KEY} keeps its type: numbers and booleans become text as in spec.env
    assert "greet: the shell; rm -rf /|3|true|list=[1, 2]" in result.stderr


def test_a_published_value_wins_over_set_and_a_missing_one_says_how_to_give_it(
    tmp_path: Path,
) -> None:
    tasks = (
        '[[tasks]]\nkind = "Publish"\nversion = "v1"\n'
        'metadata = { name = "settings" }\nspec = { who = "published" }\n'
        + command("hello", '{ run = "echo ${who}" }', ', dependencies = ["settings"]')
        + command("lonely", '{ run = "echo ${where}" }')
    )
    result = opus("run", "--set", "who=set", cwd=project(tmp_path, tasks))
    assert "hello: published" in result.stderr
    assert (
        "task 'lonely' uses ${where} but no task it depends on published 'where'; add a "
        "dependency on the task that publishes it, or give it a value "
        "(opus run --set where=VALUE)"
    ) in result.stdout


@pytest.mark.parametrize("bad", ["who", "=x", " who=x"])
def test_set_without_a_key_is_a_usage_error(tmp_path: Path, bad: str) -> None:
    result = opus("run", "--set", bad, cwd=project(tmp_path, command("x", '{ run = "true" }')))
    assert result.returncode == 2
    assert f"argument --set: {bad!r} is not KEY=VALUE" in result.stderr


def test_durations_lists_the_slowest_tasks_and_what_each_waited_for(tmp_path: Path) -> None:
    tasks = (
        command("slow", '{ run = "sleep 0.5" }')
        + command("quick", '{ run = "true" }')
        + command("after", '{ run = "true" }', ', dependencies = ["slow"]')
    )
    root = tmp_path / "p"
    root.mkdir()
    project(root, tasks).joinpath("opus.toml").write_text(
        (root / "opus.toml").read_text().replace('persistence = "memory"', 'persistence = "sqlite"')
    )
    one = opus("run", "--durations", "1", cwd=root)
    assert one.returncode == 0, one.stderr
    section = one.stdout.split(" slowest 1 durations ")[1]
    assert "DURATION  TASK  WAITED FOR DEPENDENCIES  THEN FOR A WORKER" in section
    assert [line.split()[1] for line in section.splitlines()[2:-1]] == ["slow"]
    shown = opus("runs", "show", "--durations", "0", cwd=root)
    assert shown.returncode == 0, shown.stderr
    rows = shown.stdout.split(" durations ")[1].splitlines()[2:]
    assert rows[0].split()[1] == "slow"  # slowest first
    after = next(row.split() for row in rows if row.split()[1] == "after")
    assert float(after[2].rstrip("s")) >= 0.5  # it waited for slow to end
    refused = opus("run", "--durations", "-1", cwd=root)
    assert refused.returncode == 2
    assert "--durations: expected a whole number of at least 0" in refused.stderr
