"""The command line's manners (issue 15 items 6-8), through `opus` (`cli_helpers.opus`).

Names instead of ids and "did you mean" for slips, listings by default,
JSON for programs and readable times for people, a question before
forgetting everything, and shell completion for bash and zsh.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pytest
from cli_helpers import OPUS, one_line_error, opus

PROCESSORS = """
from opus_core import TaskProcessor

class Echo(TaskProcessor):
    kind = "Echo"
    def process_task(self, task, command, context, key_value_store, state_persistence):
        if task.spec.get("fail"):
            raise RuntimeError(task.spec["fail"])
        return {task.task_id: "hi"}
"""

PROJECT = """
[opus]
processors = ["processors:Echo"]
persistence = "file"

[persistence.file]
directory = "state"

[[tasks]]
kind = "Echo"
version = "v1"
metadata = { name = "train" }

[[tasks]]
kind = "Echo"
version = "v1"
metadata = { name = "deploy", dependencies = ["train"], contexts = ["dev", "default"] }
"""


def project(root: Path, toml: str = PROJECT) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "processors.py").write_text(PROCESSORS)
    (root / "opus.toml").write_text(textwrap.dedent(toml))
    return root


@pytest.fixture
def ran(tmp_path: Path) -> Path:
    """A project whose tasks ran once in context default and once in dev."""
    root = project(tmp_path / "project")
    for context in ("default", "dev"):
        result = opus("run", "--context", context, cwd=root)
        assert result.returncode == 0, result.stderr
    return root


# -- subcommands --------------------------------------------------------------------------


def test_a_misspelt_subcommand_suggests_the_closest(tmp_path: Path) -> None:
    message = one_line_error(opus("rnu", cwd=tmp_path))
    assert "invalid choice: 'rnu'; did you mean 'run'?" in message
    message = one_line_error(opus("state", "shwo", cwd=tmp_path))
    assert "did you mean 'show'?" in message
    nothing_close = one_line_error(opus("frobnicate", cwd=tmp_path))
    assert "did you mean" not in nothing_close and "choose from" in nothing_close


def test_a_flag_error_names_the_flag(tmp_path: Path) -> None:
    assert "argument --command: expected one argument" in one_line_error(
        opus("state", "show", "train", "--command", cwd=tmp_path)
    )
    message = one_line_error(opus("completion", "fish", cwd=tmp_path))
    assert "argument shell: invalid choice: 'fish'" in message


@pytest.mark.parametrize(
    ("group", "action"), [("plugins", "list"), ("config", "show"), ("state", "list")]
)
def test_a_group_without_an_action_runs_its_listing(
    tmp_path: Path, group: str, action: str
) -> None:
    root = project(tmp_path)
    alone = opus(group, cwd=root)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout == opus(group, action, cwd=root).stdout
    assert alone.stdout.strip()


# -- opus state ---------------------------------------------------------------------------


def test_state_show_takes_a_task_name_for_a_command_and_context(ran: Path) -> None:
    shown = opus("state", "show", "train", cwd=ran)
    assert shown.returncode == 0, shown.stderr
    assert "id:        opus-run:apply:default:train" in shown.stdout
    assert re.search(r"^status:\s+succeeded$", shown.stdout, re.M)
    in_dev = opus("state", "show", "deploy", "--context", "dev", "--json", cwd=ran)
    assert json.loads(in_dev.stdout)["id"] == "opus-run:apply:dev:deploy"
    by_id = opus("state", "show", "opus-run:apply:dev:train", "--json", cwd=ran)
    assert json.loads(by_id.stdout)["state"]["context"] == "dev"


def test_state_show_suggests_a_close_name_or_the_context_that_has_it(ran: Path) -> None:
    message = one_line_error(opus("state", "show", "trian", cwd=ran))
    assert "no state for 'trian'" in message and "did you mean 'train'?" in message
    message = one_line_error(opus("state", "show", "train", "--context", "prod", cwd=ran))
    assert "--command apply --context default" in message
    assert "--command apply --context dev" in message
    message = one_line_error(opus("state", "show", "zzz", cwd=ran))
    assert "`opus state list` shows what there is" in message


def test_state_times_are_local_in_tables_and_iso_8601_in_json(ran: Path) -> None:
    listed = opus("state", "list", "--json", cwd=ran)
    assert listed.returncode == 0, listed.stderr
    records = json.loads(listed.stdout)
    assert [r["id"] for r in records] == [
        "opus-run:apply:default:deploy",
        "opus-run:apply:default:train",
        "opus-run:apply:dev:deploy",
        "opus-run:apply:dev:train",
    ]
    first = records[0]
    assert first["task"] == "deploy" and first["status"] == "succeeded"
    finished = datetime.fromisoformat(first["finished_at"])
    assert finished.utcoffset() is not None
    assert abs(finished.timestamp() - time.time()) < 600
    assert isinstance(first["duration"], float)

    table = opus("state", "list", cwd=ran).stdout.splitlines()
    assert table[0].split() == ["ID", "STATUS", "FINISHED", "DURATION", "BYTES"]
    local = datetime.fromtimestamp(finished.timestamp()).strftime("%Y-%m-%d %H:%M:%S")
    assert local in table[1]
    assert re.search(r"\s\d+\.\d+s\s", table[1])  # a duration as 0.00s, not an epoch number

    shown = opus("state", "show", "deploy", "--json", cwd=ran)
    assert json.loads(shown.stdout)["state"]["finished_at"] == first["finished_at"]


def test_state_list_json_of_nothing_is_an_empty_list(tmp_path: Path) -> None:
    root = project(tmp_path)
    listed = opus("state", "list", "--json", cwd=root)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    assert opus("state", "list", cwd=root).stdout.strip() == "no state"


def test_state_clear_of_everything_needs_yes_off_a_terminal(ran: Path) -> None:
    message = one_line_error(opus("state", "clear", cwd=ran))
    assert "pass --yes to confirm" in message and "4 record(s)" in message
    assert "opus-run:apply:dev:train" in opus("state", "list", cwd=ran).stdout  # kept
    one = opus("state", "clear", "opus-run:apply:dev:train", cwd=ran)  # one id needs no --yes
    assert one.stdout.strip() == "cleared 1 record(s)"
    cleared = opus("state", "clear", "--yes", cwd=ran)
    assert cleared.returncode == 0 and cleared.stdout.strip() == "cleared 3 record(s)"
    assert opus("state", "list", cwd=ran).stdout.strip() == "no state"


def answering_on_a_terminal(args: list[str], answer: bytes, cwd: Path) -> tuple[int, str]:
    """Run `opus ARGS` on a pseudo-terminal, typing `answer` once it asks; status and screen."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(cwd)
        for key in [k for k in os.environ if k.startswith("OPUS_")]:
            del os.environ[key]
        os.environ["XDG_CONFIG_HOME"] = str(cwd / ".user-config")
        os.execv(str(OPUS), [str(OPUS), *args])
    screen = b""
    answered = False
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
        if not answered and b"[y/N]" in screen:
            os.write(fd, answer)
            answered = True
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), screen.decode(errors="replace")


def test_state_clear_of_everything_asks_on_a_terminal(ran: Path) -> None:
    status, screen = answering_on_a_terminal(["state", "clear"], b"\n", ran)
    assert status == 0 and "Forget all 4 record(s)" in screen and "[y/N]" in screen
    assert "nothing cleared" in screen
    assert "opus-run:apply:dev:train" in opus("state", "list", cwd=ran).stdout
    status, screen = answering_on_a_terminal(["state", "clear"], b"y\n", ran)
    assert status == 0 and "cleared 4 record(s)" in screen
    assert opus("state", "list", cwd=ran).stdout.strip() == "no state"


# -- opus config --------------------------------------------------------------------------


def test_config_show_includes_the_defaults_marked_as_such(tmp_path: Path) -> None:
    root = project(tmp_path)
    shown = opus("config", "show", cwd=root)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert 'opus.runner = "sequential"  # default' in lines
    assert f'opus.persistence = "file"  # {root / "opus.toml"}' in lines
    assert "opus.fail_fast = false  # default" in lines
    assert 'persistence.file.directory = "state"' in shown.stdout
    assert "persistence.file.lock_timeout = 30.0  # default" in lines  # the class's own default


def test_config_show_json(tmp_path: Path) -> None:
    root = project(tmp_path)
    shown = json.loads(opus("config", "show", "--json", cwd=root).stdout)
    assert shown["files"] == [str(root / "opus.toml")]
    assert shown["config"]["opus"]["runner"] == "sequential"
    assert shown["config"]["opus"]["persistence"] == "file"
    assert shown["sources"]["opus.runner"] == "default"
    assert shown["sources"]["opus.persistence"] == str(root / "opus.toml")
    assert [t["metadata"]["name"] for t in shown["config"]["tasks"]] == ["train", "deploy"]


def test_config_show_without_a_file_shows_every_default(tmp_path: Path) -> None:
    shown = opus("config", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("# no configuration file found")
    assert 'opus.persistence = "sqlite"  # default' in shown.stdout
    assert 'persistence.sqlite.synchronous = "normal"  # default' in shown.stdout
    assert "persistence.sqlite.keep_runs = 100  # default" in shown.stdout


def test_config_init_into_a_directory_writes_opus_toml_there(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    written = opus("config", "init", "app", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    assert written.stdout.strip() == f"wrote {Path('app') / 'opus.toml'}"
    assert "[opus]" in (tmp_path / "app" / "opus.toml").read_text()
    assert "already exists; pass --force" in one_line_error(
        opus("config", "init", "app", cwd=tmp_path)
    )
    assert opus("config", "init", "app", "--force", cwd=tmp_path).returncode == 0


def test_config_init_on_a_directory_or_under_a_file_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "app" / "opus.toml").mkdir(parents=True)  # a directory where the file would go
    for args in (["app/opus.toml"], ["app/opus.toml", "--force"], ["app", "--force"]):
        message = one_line_error(opus("config", "init", *args, cwd=tmp_path))
        assert "is a directory" in message and "internal error" not in message
    (tmp_path / "file").write_text("")
    message = one_line_error(opus("config", "init", "file/opus.toml", cwd=tmp_path))
    assert message == "opus: error: cannot write file/opus.toml: file is not a directory"


# -- completion ---------------------------------------------------------------------------


def bash_candidates(script: Path, words: list[str], cwd: Path) -> list[str]:
    """What the bash completion offers with the cursor at the end of the last of `words`."""
    driver = textwrap.dedent(
        """\
        source "$1"; shift
        COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
        _opus
        printf '%s\\n' "${COMPREPLY[@]}"
        """
    )
    result = subprocess.run(
        ["bash", "-c", driver, "bash", str(script), str(OPUS), *words],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=_completion_env(cwd),
    )
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line]


def _completion_env(cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env["XDG_CONFIG_HOME"] = str(cwd / ".user-config")
    return env


def test_bash_completion_offers_commands_options_runners_and_tasks(tmp_path: Path) -> None:
    root = project(tmp_path / "project")
    script = tmp_path / "opus.bash"
    generated = opus("completion", "bash", cwd=root)
    assert generated.returncode == 0, generated.stderr
    script.write_text(generated.stdout)
    assert "complete -F _opus opus" in generated.stdout

    def offered(*words: str) -> list[str]:
        return bash_candidates(script, list(words), root)

    assert {"run", "plugins", "config", "state", "completion"} <= set(offered(""))
    assert sorted(offered("r")) == ["report", "run", "runs"]
    assert sorted(offered("run")) == ["run", "runs"]
    assert offered("state", "") == ["list", "show", "clear"]
    assert {"--json", "--command", "--context"} <= set(offered("state", "show", "--"))
    assert "--yes" in offered("state", "clear", "--")
    assert {"sequential", "process", "threadpool"} <= set(offered("run", "--runner", ""))
    assert offered("run", "--runner", "seq") == ["sequential"]
    assert offered("run", "") == ["deploy", "train"]
    assert offered("run", "train", "d") == ["deploy"]  # run takes several names
    assert offered("run", "--context", "d", "tr") == ["train"]  # an option's value is skipped
    assert offered("run", "--context", "") == ["default", "dev"]
    assert offered("state", "show", "t") == ["train"]
    assert offered("completion", "") == ["bash", "zsh"]
    assert "opus.toml" in offered("--config", "")  # a file
    assert offered("--config", str(root / "opus.toml"), "run", "") == ["deploy", "train"]

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert bash_candidates(script, ["run", ""], outside) == []  # no opus.toml: no names, no noise
    assert "sequential" in bash_candidates(script, ["run", "--runner", ""], outside)


def test_completion_lists_nothing_and_fails_never_for_a_broken_project(tmp_path: Path) -> None:
    (tmp_path / "opus.toml").write_text("[opus\n")
    for kind in ("tasks", "contexts"):
        listed = opus("completion", "--list", kind, cwd=tmp_path)
        assert listed.returncode == 0 and listed.stdout == ""
    assert "sequential" in opus("completion", "--list", "runners", cwd=tmp_path).stdout.split()
    assert "--list" not in opus("completion", "--help", cwd=tmp_path).stdout
    assert "which shell?" in one_line_error(opus("completion", cwd=tmp_path))


def zsh_candidates(script: Path, words: list[str], cwd: Path) -> list[str]:
    """What the zsh function offers, with compsys's builtins stubbed to print their words."""
    driver = textwrap.dedent(
        """\
        compdef() { :; }
        _describe() { local -a items; items=("${(@P)${@[-1]}}"); print -l -- "${items[@]%%:*}"; }
        compadd() { [[ "$1" == -- ]] && shift; print -l -- "$@"; }
        _files() { print -- "@files"; }
        source "$1"; shift
        words=("$@"); CURRENT=${#words}
        _opus
        """
    )
    result = subprocess.run(
        ["zsh", "-f", "-c", driver, "zsh", str(script), str(OPUS), *words],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=_completion_env(cwd),
    )
    assert result.returncode in (0, 1), result.stderr
    return [line for line in result.stdout.splitlines() if line]


def test_zsh_completion_script(tmp_path: Path) -> None:
    root = project(tmp_path / "project")
    generated = opus("completion", "zsh", cwd=root)
    assert generated.returncode == 0, generated.stderr
    text = generated.stdout
    assert text.startswith("#compdef opus\n")
    assert "compdef _opus opus" in text and "_describe" in text
    assert "'run:run the tasks of the configuration'" in text  # commands with their help
    assert shutil.which("zsh"), "zsh is missing: dev.py test installs it (apt-get install zsh)"
    script = tmp_path / "_opus"
    script.write_text(text)
    assert subprocess.run(["zsh", "-n", str(script)], capture_output=True).returncode == 0

    def offered(*words: str) -> list[str]:
        return zsh_candidates(script, list(words), root)

    assert {"run", "plugins", "config", "state", "completion"} <= set(offered(""))
    assert offered("state", "") == ["list", "show", "clear"]
    assert {"sequential", "process"} <= set(offered("run", "--runner", ""))
    assert offered("run", "") == ["deploy", "train"]
    assert offered("run", "--tb", "") == ["short", "long", "line", "no"]
    assert offered("--config", "") == ["@files"]
    assert "--json" in offered("state", "list", "--")
