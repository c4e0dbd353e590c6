"""The command-line reference of the user guide, rendered from the commands' own parsers.

``markdown()`` returns one Markdown page: for every command (``train_job.py`` and each
``python -m birdcore.X``, subcommands included) its description, usage line, a table of its arguments
(every option string, its value, default and help) and its epilog. The guide's build (docs/hooks.py)
writes it as ``reference/cli.md``, so the reference cannot drift from the code; tests/test_docs.py checks
that every option string of every parser appears in the built site. ``python -m birdcore.cli.reference``
prints the page.
"""
from __future__ import annotations

import argparse
import html
import importlib
from dataclasses import dataclass

from birdcore.cli.main import COMMANDS


@dataclass(frozen=True)
class Command:
    """One command of the reference: its name as a user types it and its parser (subcommands inside)."""
    name: str
    parser: argparse.ArgumentParser


# module -> the name the guide uses (python -m birdcore.X; the birdclef command has the same options)
_MODULE_NAMES = {
    "birdcore.cli.train": "python train_job.py",
    "birdcore.cli.predict": "python -m birdcore.predict",
    "birdcore.cli.evaluate": "python -m birdcore.evaluate",
    "birdcore.cli.soundscapes": "python -m birdcore.soundscapes",
    "birdcore.cli.review": "python -m birdcore.review",
    "birdcore.cli.serve": "python -m birdcore.serve",
    "birdcore.cli.progress": "python -m birdcore.progress",
}


def commands() -> list[Command]:
    """Every command of ``birdclef`` (birdcore.cli.main.COMMANDS), in its order, under the name the guide uses."""
    out = []
    for module_name, _ in COMMANDS.values():
        name = _MODULE_NAMES[module_name]
        out.append(Command(name, importlib.import_module(module_name).build_parser(prog=name)))
    return out


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """A parser's subcommands by name (empty when it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string of a parser and of its subcommands (``--out``, ``-v``, ...), in order."""
    out = [s for a in parser._actions for s in a.option_strings]
    for sub in subparsers(parser).values():
        out += option_strings(sub)
    return out


def _cell(text: str) -> str:
    """Text for a Markdown table cell: HTML-escaped, pipes escaped, on one line."""
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.metavar or (action.dest.upper() if action.option_strings else "")


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help as ``-h`` shows it (with its default where the formatter adds one)."""
    formatter = parser._get_formatter()
    text = formatter._get_help_string(action) if action.help else ""
    if "%" in text:
        params = dict(vars(action), prog=parser.prog)
        params = {k: (getattr(v, "__name__", v)) for k, v in params.items() if v is not argparse.SUPPRESS}
        if params.get("choices") is not None:
            params["choices"] = ", ".join(map(str, params["choices"]))
        try:
            text = text % params
        except (KeyError, TypeError, ValueError):
            pass
    return text


# what the reference says of an option that -h does not list (help=argparse.SUPPRESS)
RETIRED = "retired: not listed by `-h`; given, it stops with one line that names what replaced it"


def _argument_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
        value = _value(action)
        meaning = (RETIRED if action.help == argparse.SUPPRESS else _cell(_help(parser, action)))
        value = f"`{value}`" if value else ""  # a pipe inside a code span does not split the row
        rows.append(f"| {names} | {value} | {meaning} |")
    if not rows:
        return []
    return ["| argument | value | meaning |", "|---|---|---|", *rows, ""]


def _section(parser: argparse.ArgumentParser, title: str, level: int) -> list[str]:
    lines = [f"{'#' * level} `{title}`", ""]
    if parser.description:
        lines += [parser.description.strip(), ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    lines += _argument_table(parser)
    subs = subparsers(parser)
    if subs:
        helps = {a.dest: a.help for a in next(a for a in parser._actions
                                                 if isinstance(a, argparse._SubParsersAction))._choices_actions}
        lines += ["| subcommand | what it does |", "|---|---|"]
        lines += [f"| `{name}` | {_cell(helps.get(name) or '')} |" for name in subs]
        lines += [""]
    if parser.epilog:
        lines += ["```text", parser.epilog.strip("\n"), "```", ""]
    for name, sub in subs.items():
        lines += _section(sub, f"{title} {name}", level + 1)
    return lines


def markdown() -> str:
    """The whole reference page (Markdown)."""
    cmds = commands()
    lines = ["# Command-line reference", "",
             "Generated from the commands' own parsers when the guide is built (`birdcore/cli/reference.py`), "
             "so it always matches `-h`. Every command is also `birdclef COMMAND` once the package is installed "
             "(`make install`), and `python -m birdcore COMMAND`: `birdclef train` is `python train_job.py`, "
             "`birdclef predict` is `python -m birdcore.predict`, and so on, with the same options.", "",
             "| command | what it does |", "|---|---|"]
    for (command, (_, text)), cmd in zip(COMMANDS.items(), cmds):
        lines.append(f"| [`{cmd.name}`](#{_anchor(cmd.name)}) (`birdclef {command}`) | {_cell(text)} |")
    lines.append("")
    for cmd in cmds:
        lines += _section(cmd.parser, cmd.name, 2)
    return "\n".join(lines) + "\n"


def _anchor(title: str) -> str:
    """The id MkDocs' toc extension gives a heading ``# `title` ``."""
    import re

    text = re.sub(r"[^\w\s-]", "", title.lower()).strip()
    return re.sub(r"[-\s]+", "-", text)


if __name__ == "__main__":
    print(markdown(), end="")
