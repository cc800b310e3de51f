"""`opus completion bash|zsh`: a shell completion script, written from the parser.

The script knows every subcommand and option of the `opus` it was made by
(plugins' commands included). Names that depend on the project — runners,
task names, contexts — it asks for when Tab is pressed, through the hidden
`opus completion --list runners|tasks|contexts`, which prints one name a line
and never fails: outside a project, or with a broken one, it prints nothing.

Which argument takes which names: an argparse action may say so itself
(`action.complete = "tasks"`); otherwise `NAMES` decides by its `dest`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opus_core.cli.commands import COMMAND_HELP

if TYPE_CHECKING:
    from opus_core.cli import Commands
    from opus_core.cli.context import CommandContext

FILES = "@files"
"""The value marker for an argument that names a file."""

NAMES: dict[str, str] = {
    "runner": "runners",
    "names": "tasks",
    "task": "tasks",
    "tasks": "tasks",
    "context": "contexts",
    "config": FILES,
    "report": FILES,
    "output": FILES,
    "directory": FILES,
}
"""What an argument with this `dest` completes to, unless its action says (`complete`)."""

BY_COMMAND: dict[tuple[str, str], str] = {("state show", "id"): "tasks"}
"""As `NAMES`, for one command's argument: `opus state show NAME`."""

DYNAMIC = ("runners", "tasks", "contexts")


@dataclass(slots=True)
class Option:
    """One option of one command, as the scripts need it."""

    flags: list[str]
    help: str
    takes_value: bool
    values: list[str] = field(default_factory=list)
    """Fixed choices, or one marker: `FILES` or a `DYNAMIC` kind."""


@dataclass(slots=True)
class Command:
    """One command (`""` is `opus` itself): its subcommands, options and positionals."""

    path: str
    subcommands: dict[str, str] = field(default_factory=dict)
    options: list[Option] = field(default_factory=list)
    positionals: list[tuple[list[str], bool]] = field(default_factory=list)
    """Each positional's values (choices or one marker) and whether it repeats."""


def _values(action: argparse.Action, path: str) -> list[str]:
    if action.choices is not None and not isinstance(action.choices, dict):
        return [str(choice) for choice in action.choices]
    marker = getattr(action, "complete", None) or BY_COMMAND.get((path, action.dest))
    marker = marker or NAMES.get(action.dest)
    if marker in DYNAMIC:
        return [f"@{marker}"]  # `@`: never a word a command offers itself
    return [FILES] if marker == FILES else []


def commands(parser: argparse.ArgumentParser) -> list[Command]:
    """Every command of `parser`, depth first, `opus` itself first."""
    found: list[Command] = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        command = Command(path)
        found.append(command)
        children: list[tuple[str, argparse.ArgumentParser]] = []
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            if isinstance(action.choices, dict) and not action.option_strings:  # subcommands
                helps = {a.dest: a.help or "" for a in getattr(action, "_choices_actions", [])}
                for name, child in action.choices.items():
                    command.subcommands[name] = helps.get(name, "")
                    children.append((name, child))
            elif action.option_strings:
                command.options.append(
                    Option(
                        list(action.option_strings),
                        " ".join((action.help or "").split()).replace("%(default)s", "…"),
                        action.nargs != 0,
                        _values(action, path) if action.nargs != 0 else [],
                    )
                )
            else:
                repeats = action.nargs in ("*", "+", argparse.REMAINDER)
                command.positionals.append((_values(action, path), repeats))
        for name, child in children:
            walk(child, f"{path} {name}".strip())

    walk(parser, "")
    return found


# -- the scripts ---------------------------------------------------------------------------


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _case(function: str, arms: list[tuple[str, str]], comment: str, tail: str = "") -> str:
    lines = [f"# {comment}", f"{function}() {{", '    case "$1" in']
    for pattern, body in arms:
        lines.append(f"        {pattern}) {body} ;;")
    lines.append("    esac")
    if tail:
        lines.append(f"    {tail}")
    lines.append("}")
    return "\n".join(lines)


def _helpers(tree: list[Command], program: str, describe: bool) -> str:
    """The shell functions both scripts share: the command tree as `case` tables.

    With `describe`, names come as `name:help` lines (zsh's `_describe`), else
    as one line of words (bash's `compgen -W`).
    """

    def words(pairs: list[tuple[str, str]]) -> str:
        if describe:
            lines = [name.replace(":", "\\:") + ":" + help for name, help in pairs]
            return "printf '%s\\n' " + " ".join(_quote(line) for line in lines)
        return "echo " + _quote(" ".join(name for name, _ in pairs))

    def key(command: Command) -> str:
        return _quote(command.path)

    subcommands = [(key(c), words(list(c.subcommands.items()))) for c in tree if c.subcommands]
    options = [
        (
            key(c),
            words(
                [
                    (flag, o.help)
                    for o in c.options
                    for flag in o.flags
                    if flag.startswith("--") or len(o.flags) == 1
                ]
            ),
        )
        for c in tree
        if c.options
    ]
    valued, values = _option_value_arms(tree, key)
    positionals = _positional_arms(tree, key)
    return "\n\n".join(
        [
            _case("_opus_subcommands", subcommands, "the subcommands of a command ($1: its path)"),
            _case("_opus_options", options, "the options of a command"),
            _case(
                "_opus_takes_value",
                valued,
                "whether option $2 of command $1 takes a value",
                tail="return 1",
            ),
            _case("_opus_option_values", values, "the values of option $2 of command $1"),
            _case(
                "_opus_positional_values",
                positionals,
                "the values of the positional argument number $2 (from 0) of command $1",
            ),
            _case(
                "_opus_is_subcommand",
                [
                    (
                        "|".join(
                            _quote(f"{c.path}:{name}") for c in tree for name in c.subcommands
                        ),
                        "return 0",
                    )
                ],
                'whether $2 is a subcommand of command $1 (called as "$1:$2")',
                tail="return 1",
            ),
            f"""# names from the project, asked of opus itself (nothing outside a project)
_opus_names() {{
    "${{_opus_program:-{program}}}" completion --list "$1" \\
        ${{_opus_config:+--config "$_opus_config"}} 2>/dev/null
}}""",
        ]
    )


_WALK = """\
    # Walk the words before the cursor: which command, how many positionals,
    # whether the word under the cursor is an option's value.
    local _opus_path="" _opus_word="" _opus_expect="" _opus_npos=0 _opus_i _opus_config=""
    for ((_opus_i = FIRST; _opus_i < LAST; _opus_i++)); do
        _opus_word="${WORDS[_opus_i]}"
        if [[ -n "$_opus_expect" ]]; then
            [[ "$_opus_expect" == --config ]] && _opus_config="$_opus_word"
            _opus_expect=""
            continue
        fi
        case "$_opus_word" in
            --*=*) continue ;;
            -*) _opus_takes_value "$_opus_path" "$_opus_word" && _opus_expect="$_opus_word"
                continue ;;
        esac
        if _opus_is_subcommand "$_opus_path:$_opus_word"; then
            _opus_path="${_opus_path:+$_opus_path }$_opus_word"
            _opus_npos=0
        else
            _opus_npos=$((_opus_npos + 1))
        fi
    done
"""


def _option_value_arms(
    tree: list[Command], key: Callable[[Command], str]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Per command: which of its options take a value, and the values each may take."""
    valued = []
    values = []
    for c in tree:
        flags = [flag for o in c.options if o.takes_value for flag in o.flags]
        if flags:
            valued.append((key(c), f'case "$2" in {"|".join(flags)}) return 0 ;; esac'))
        arms = [
            ("|".join(o.flags), "echo " + _quote(" ".join(o.values)))
            for o in c.options
            if o.takes_value and o.values
        ]
        if arms:
            inner = " ".join(f"{pattern}) {body} ;;" for pattern, body in arms)
            values.append((key(c), f'case "$2" in {inner} esac'))
    return valued, values


def _positional_arms(tree: list[Command], key: Callable[[Command], str]) -> list[tuple[str, str]]:
    """Per command: the values of each of its positional arguments, by position."""
    positionals = []
    for c in tree:
        arms = []
        for index, (choices, repeats) in enumerate(c.positionals):
            body = "echo " + _quote(" ".join(choices)) if choices else ":"
            arms.append(("*" if repeats else str(index), body))
            if repeats:  # it takes every later word too
                break
        if any(body != ":" for _, body in arms):
            inner = " ".join(f"{pattern}) {body} ;;" for pattern, body in arms)
            positionals.append((key(c), f'case "$2" in {inner} esac'))
    return positionals


def _value_words() -> str:
    return """\
# the words for a value: fixed ones, or names asked of opus, or files
_opus_expand() {
    local _opus_v IFS=$' \t\n'
    for _opus_v in $(echo "$1"); do
        case "$_opus_v" in
            @files) echo "@files" ;;
            @runners|@tasks|@contexts) _opus_names "${_opus_v#@}" ;;
            *) echo "$_opus_v" ;;
        esac
    done
}"""


def bash_script(parser: argparse.ArgumentParser, program: str = "opus") -> str:
    """A bash completion script for `parser` (`complete -F _opus opus`)."""
    walk = _WALK.replace("FIRST", "1").replace("LAST", "COMP_CWORD").replace("WORDS", "COMP_WORDS")
    return f"""\
# bash completion for opus, written by `opus completion bash`.
# Load it with:  source <(opus completion bash)
# or save it as ~/.local/share/bash-completion/completions/opus

{_helpers(commands(parser), program, describe=False)}

{_value_words()}

_opus_reply() {{  # COMPREPLY from $1 (words), for the word under the cursor
    local IFS=$'\\n' _opus_words
    _opus_words="$(_opus_expand "$1")"
    if [[ "$_opus_words" == *@files* ]]; then
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -- "$2"))
        return
    fi
    COMPREPLY=($(compgen -W "$_opus_words" -- "$2"))
}}

_opus() {{
    local _opus_cur="${{COMP_WORDS[COMP_CWORD]}}" _opus_program="${{COMP_WORDS[0]}}"
{walk}
    COMPREPLY=()
    if [[ -n "$_opus_expect" ]]; then
        _opus_reply "$(_opus_option_values "$_opus_path" "$_opus_expect")" "$_opus_cur"
    elif [[ "$_opus_cur" == -* ]]; then
        _opus_reply "$(_opus_options "$_opus_path")" "$_opus_cur"
    elif [[ -n "$(_opus_subcommands "$_opus_path")" ]]; then
        _opus_reply "$(_opus_subcommands "$_opus_path")" "$_opus_cur"
    else
        _opus_reply "$(_opus_positional_values "$_opus_path" "$_opus_npos")" "$_opus_cur"
    fi
}}

complete -F _opus {program}
"""


def zsh_script(parser: argparse.ArgumentParser, program: str = "opus") -> str:
    """A zsh completion script for `parser` (a `#compdef` function, with descriptions)."""
    walk = _WALK.replace("FIRST", "2").replace("LAST", "CURRENT").replace("WORDS", "words")
    return f"""\
#compdef {program}
# zsh completion for opus, written by `opus completion zsh`.
# Save it as _opus in a folder of $fpath, e.g.  opus completion zsh > "${{fpath[1]}}/_opus"
# or, for this shell only:  source <(opus completion zsh)

{_helpers(commands(parser), program, describe=True)}

{_value_words()}

_opus_offer() {{  # $1: what to offer (name:help lines, or words); $2: its title
    local -a _opus_items
    if [[ "$1" == *@files* ]]; then
        _files
        return
    fi
    _opus_items=("${{(@f)1}}")
    _opus_items=(${{_opus_items:#}})
    (( ${{#_opus_items}} )) || return 1
    if [[ "$1" == *:* ]]; then
        _describe -t "$2" "$2" _opus_items
    else
        compadd -- $_opus_items
    fi
}}

_opus() {{
    local _opus_cur="${{words[CURRENT]}}" _opus_program="${{words[1]}}"
    setopt localoptions no_shwordsplit
{walk}
    local _opus_list
    if [[ -n "$_opus_expect" ]]; then
        _opus_list="$(_opus_expand "$(_opus_option_values "$_opus_path" "$_opus_expect")")"
        _opus_offer "${{_opus_list// /$'\\n'}}" value
    elif [[ "$_opus_cur" == -* ]]; then
        _opus_offer "$(_opus_options "$_opus_path")" option
    elif [[ -n "$(_opus_subcommands "$_opus_path")" ]]; then
        _opus_offer "$(_opus_subcommands "$_opus_path")" command
    else
        _opus_list="$(_opus_expand "$(_opus_positional_values "$_opus_path" "$_opus_npos")")"
        _opus_offer "${{_opus_list// /$'\\n'}}" argument
    fi
}}

if [[ "$zsh_eval_context" == *loadautofunc* ]]; then
    _opus "$@"
else
    compdef _opus {program}
fi
"""


# -- names from the project --------------------------------------------------------------


def names(kind: str, context: CommandContext) -> list[str]:
    """The runner names, task names or contexts of the project, for completion.

    Never raises: a missing or broken configuration has no names.
    """
    try:
        if kind == "runners":
            return sorted(context.plugins.registry("runners"))
        config = context.config
        if config.project is None and not config.data.get("tasks"):
            return []
        tasks = context.assembly.tasks()
    except Exception:  # completion must never print an error under the cursor
        return []
    if kind == "tasks":
        return sorted({task.name for task in tasks if task.name})
    contexts = {"default"}
    for task in tasks:
        contexts.update(task.meta.contexts or ())
        contexts.update(task.meta.exclude_contexts)
    return sorted(contexts)


COMPLETION_EPILOG = """\
install:
  bash:  opus completion bash > ~/.local/share/bash-completion/completions/opus
  zsh:   opus completion zsh > "${fpath[1]}/_opus"   (then start a new shell)
  or, for this shell only:  source <(opus completion bash)"""


def add_command(commands: Commands) -> None:
    """`opus completion`: its arguments, and `completion` to handle it."""
    parser = commands.add(
        "completion",
        completion,
        help=COMMAND_HELP["completion"],
        description="Print a completion script for bash or zsh.",
        epilog=COMPLETION_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        configure=False,  # runs at each TAB: never an error under the cursor
    )
    parser.add_argument("shell", nargs="?", choices=("bash", "zsh"), help="the shell")
    parser.add_argument(  # what the scripts call for names that depend on the project
        "--list", choices=("runners", "tasks", "contexts"), help=argparse.SUPPRESS
    )


def completion(context: CommandContext) -> int:
    """Print a completion script, or (`--list`) the names the scripts ask for."""
    args = context.args
    if args.list:
        for name in names(args.list, context):
            print(name)
        return 0
    if args.shell is None:
        from opus_core.errors import OpusError

        raise OpusError("which shell? `opus completion bash` or `opus completion zsh`")
    from opus_core.cli.parser import build_parser

    parser = build_parser(context.plugins)
    script = bash_script(parser) if args.shell == "bash" else zsh_script(parser)
    sys.stdout.write(script)
    return 0
