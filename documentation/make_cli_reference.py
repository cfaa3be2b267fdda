"""Write documentation/cli.md from the console scripts' own argparse parsers, so the reference cannot drift.

    python documentation/make_cli_reference.py            # rewrite documentation/cli.md
    python documentation/make_cli_reference.py --check    # exit 1 if cli.md is out of date

The list of commands is setup.py's ``console_scripts`` (read with ``ast``, never executed): that is
what ``pip install`` turns into commands. Each entry's module must expose ``build_parser()``. The
text is formatted at a fixed width, so it does not depend on the terminal the script runs in.
"""
from __future__ import annotations

import argparse
import ast
import functools
import importlib
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

REPOSITORY = Path(__file__).resolve().parents[1]
SETUP_FILE = REPOSITORY / "setup.py"
OUTPUT_FILE = REPOSITORY / "documentation" / "cli.md"
WIDTH = 100            # usage lines wrap here, whatever the terminal
REGENERATE = "python documentation/make_cli_reference.py"


def console_scripts(setup_file: Path = SETUP_FILE) -> list[tuple[str, str]]:
    """(command, "module:function") for every console script in setup.py's setup(entry_points=...).

    Parsed, not imported: importing setup.py would run setup().
    """
    tree = ast.parse(setup_file.read_text(encoding="utf-8"), filename=str(setup_file))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "setup":
            for keyword in node.keywords:
                if keyword.arg == "entry_points":
                    try:
                        entry_points = ast.literal_eval(keyword.value)
                    except ValueError:
                        raise RuntimeError(f"{setup_file}: entry_points must be a literal dict to be documented") from None
                    scripts = []
                    for line in entry_points.get("console_scripts", []):
                        name, _, target = line.partition("=")
                        scripts.append((name.strip(), target.strip()))
                    return scripts
    raise RuntimeError(f"{setup_file}: no setup(entry_points=...) found")


def load_parser(command: str, target: str) -> argparse.ArgumentParser:
    """The command's parser from its module's ``build_parser()``, with ``prog`` fixed to the command name.

    ``prog`` is set because a parser without one would take it from ``sys.argv[0]`` (pytest, python ...).
    """
    module_name = target.split(":")[0]
    module = importlib.import_module(module_name)
    build = getattr(module, "build_parser", None)
    if build is None:
        raise RuntimeError(f"{module_name} (console script {command}) has no build_parser(); add one to document it")
    parser = build()
    parser.prog = command
    parser.formatter_class = functools.partial(parser.formatter_class, width=WIDTH)
    return parser


def _metavar(action: argparse.Action) -> str:
    """The value placeholder argparse shows for an action ('' for flags that take no value)."""
    if action.nargs == 0:
        return ""
    if action.metavar is not None:
        metavar = action.metavar
    elif action.choices is not None:
        metavar = "{" + ",".join(str(choice) for choice in action.choices) + "}"
    else:
        metavar = action.dest if not action.option_strings else action.dest.upper()
    names = metavar if isinstance(metavar, tuple) else None
    first = names[0] if names else metavar
    nargs = action.nargs
    if nargs is None:
        return first
    if nargs == argparse.OPTIONAL:
        return f"[{first}]"
    if nargs == argparse.ZERO_OR_MORE:
        return f"[{first} ...]"
    if nargs == argparse.ONE_OR_MORE:
        return f"{first} [{names[-1] if names else first} ...]"
    if nargs == argparse.REMAINDER:
        return "..."
    if nargs == argparse.PARSER:
        return f"{first} ..."
    if isinstance(nargs, int):
        return " ".join(names if names and len(names) == nargs else [first] * nargs)
    return first


def _help(action: argparse.Action, prog: str) -> str:
    """The help text with argparse's %(default)s-style fields filled in, as --help would print it."""
    text = action.help or ""
    if "%" not in text:
        return text
    params: dict[str, Any] = dict(vars(action), prog=prog)
    for name, value in list(params.items()):
        if value is argparse.SUPPRESS:
            del params[name]
        elif hasattr(value, "__name__"):
            params[name] = value.__name__
    if params.get("choices") is not None:
        params["choices"] = ", ".join(str(choice) for choice in params["choices"])
    return text % params


def _default(action: argparse.Action) -> str:
    """What happens when the flag is not given: 'required', 'off'/'on', the value, or '-' (none)."""
    if action.required or (not action.option_strings and action.nargs not in ("?", "*")):
        return "required"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "on" if action.default else "off"
    default = action.default
    if default is None or default is argparse.SUPPRESS or default == []:
        return "-"
    if isinstance(default, (list, tuple)):
        default = " ".join(str(value) for value in default)
    return f"`{default}`"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _prose(text: str) -> str:
    """Help or description text as markdown shows it: one line, no accidental HTML tags or emphasis."""
    return _cell(text).replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")


def command_section(command: str, parser: argparse.ArgumentParser) -> str:
    """One command: description, usage block and a table of every argument except -h."""
    usage = parser.format_usage().strip()
    lines = [f"## {command}", ""]
    if parser.description:
        lines += [_prose(parser.description), ""]
    lines += ["```", usage, "```", "", "| argument | default | help |", "| --- | --- | --- |"]
    for action in parser._actions:   # argparse has no public list of its actions
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        names = ", ".join(f"`{name}`" for name in action.option_strings) or f"`{action.metavar or action.dest}`"
        metavar = _metavar(action) if action.option_strings else ""
        flag = f"{names} `{metavar}`" if metavar else names
        lines.append(f"| {_cell(flag)} | {_cell(_default(action))} | {_prose(_help(action, command))} |")
    return "\n".join(lines) + "\n"


def render(scripts: Optional[Sequence[tuple[str, str]]] = None) -> str:
    """The whole cli.md: an index, then one section per console script in setup.py's order."""
    scripts = console_scripts() if scripts is None else scripts
    parsers = [(command, load_parser(command, target)) for command, target in scripts]
    parts = [
        "# Command-line reference",
        "",
        "Generated from each command's own argparse parser; do not edit by hand. After changing a",
        f"command-line interface, run `{REGENERATE}`",
        "(`tests/test_documentation.py` fails while this file and the code disagree).",
        "",
        "Every command also takes `-h` / `--help`. The `--*_root` flags override the environment",
        "variables `TRANSSEG_raw`, `TRANSSEG_preprocessed` and `TRANSSEG_results`; a default of `-`",
        "means none (the help says what is used instead).",
        "",
        "| command | what it does |",
        "| --- | --- |",
    ]
    for command, parser in parsers:
        summary = _prose(parser.description or "")
        parts.append(f"| [`{command}`](#{command}) | {summary} |")
    parts.append("")
    for command, parser in parsers:
        parts.append(command_section(command, parser))
    return "\n".join(parts).rstrip("\n") + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Write cli.md, or with --check report whether it is current (exit status 1 if not)."""
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--check", action="store_true", help="only compare with the existing file")
    cli.add_argument("-o", "--output", type=Path, default=OUTPUT_FILE, help="file to write (default: documentation/cli.md)")
    args = cli.parse_args(argv)
    try:
        text = render()
    except (RuntimeError, ImportError) as error:
        print(f"make_cli_reference: {error}", file=sys.stderr)
        return 1
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is out of date: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPOSITORY))   # document this checkout's transseg, installed or not
    raise SystemExit(main())
