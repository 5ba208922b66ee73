"""The documentation names only commands, options and files that exist.

A reader copies ``scones redrive --since 2h`` from the README, or opens the file the
architecture map points to; a renamed option or a moved module must fail here, not there.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import pytest

from scones.cli.main import build_parser
from scones.template_params import PROJECT_ROOT

DOCS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]

# Paths the docs name that commands create (they are not in a checkout).
CREATED = (
    ".aws-sam",
    ".scones",
    ".venv",
    "build/",
    "out/",
    "models/reference/ensemble-lite2-v1",  # make model-reference-lite2
)


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[str, set[str]]:
    """Every command line (``"bench model"``) with the long options it takes."""
    found: dict[str, set[str]] = {" ".join(prefix): set()}
    for action in parser._actions:
        found[" ".join(prefix)].update(o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= commands(sub, (*prefix, name))
    return found


COMMANDS = commands(build_parser())
# Longest first, so "bench model" wins over "bench".
NAMES = sorted((name for name in COMMANDS if name), key=len, reverse=True)


def spans(text: str) -> list[tuple[int, str]]:
    """(line, text) of each inline code span and each line of a fenced block, with a
    shell comment cut off."""
    found: list[tuple[int, str]] = []
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            found.append((number, line.split(" #", 1)[0]))
        else:
            found.extend((number, span) for span in re.findall(r"`([^`\n]+)`", line))
    return found


def scones_calls(text: str) -> list[tuple[int, str, str]]:
    """(line, command, the rest) of each ``scones ...`` in code."""
    calls = []
    for number, span in spans(text):
        for match in re.finditer(r"(?:^|[\s/(])scones ([a-z][a-z-]*(?: [a-z][a-z-]*)?)(.*)", span):
            words, rest = match.group(1), match.group(2)
            command = next(
                (n for n in NAMES if words == n or words.startswith(n + " ")), words.split()[0]
            )
            calls.append((number, command, words[len(command) :] + rest))
    return calls


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_scones_command_and_option_in_the_docs_exists(doc: Path) -> None:
    wrong = []
    for number, command, rest in scones_calls(doc.read_text()):
        if command not in COMMANDS:
            wrong.append(f"{doc.name}:{number}: no command 'scones {command}'")
            continue
        # Options until a pipe or the next command in the same line.
        own = re.split(r"\|\||&&|\||;|\bscones ", rest)[0]
        for option in re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", own):
            if option not in COMMANDS[command]:
                wrong.append(f"{doc.name}:{number}: 'scones {command}' has no {option}")
    assert not wrong, "\n".join(wrong)


def test_the_command_reader_finds_commands_and_options() -> None:
    """The reader above is what the test trusts: it must see these."""
    text = "`scones redrive --since 2h`\n```bash\nscones bench model --runs 3  # a --comment\n```"
    assert scones_calls(text) == [(1, "redrive", " --since 2h"), (3, "bench model", " --runs 3 ")]


def tracked_paths() -> set[str]:
    files = subprocess.run(
        ["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    paths = set(files)
    for name in files:
        parts = name.split("/")
        paths.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return paths


def named_paths(text: str, top_level: set[str]) -> list[tuple[int, str]]:
    """(line, path) of each project path in inline code: a path or file name that starts
    with one of the project's top-level files or folders (so ``dataset.json`` in S3, a
    media type or the word ``build`` is not one); a test's node id
    (``tests/x.py::test_y``) keeps its test name."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for span in re.findall(r"`([^`\n]+)`", line):
            for word in re.split(r"[\s,;=]+", span):
                token = word.strip("()[]'\"").rstrip(":.,")
                if (
                    ("/" in token or "." in token)
                    and token.split("/")[0] in top_level
                    and not re.search(r"[*{}<>…|]|\.\.\.", token)
                ):
                    found.append((number, token))
    return found


def missing_paths(text: str, tracked: set[str]) -> list[tuple[int, str]]:
    top_level = {path.split("/")[0] for path in tracked} | {c.strip("/") for c in CREATED}
    missing = []
    for number, token in named_paths(text, top_level):
        path, _, test = token.partition("::")
        path = path.rstrip("/")
        if token.startswith(CREATED):
            continue
        if path not in tracked or (
            test
            and not re.search(
                rf"^(?:async )?def {re.escape(test.split('[')[0])}\(",
                (PROJECT_ROOT / path).read_text(),
                re.M,
            )
        ):
            missing.append((number, token))
    return missing


def test_the_path_reader_checks_project_paths_and_test_names() -> None:
    tracked = {"src/scones/paths.py", "src/scones", "src", "tests/test_docs.py", "tests"}
    text = (
        "`src/scones/paths.py`, `src/scones/gone.py`, `dataset.json`, `out/run-1.html`\n"
        "`tests/test_docs.py::test_the_path_reader_checks_project_paths_and_test_names`\n"
        "`tests/test_docs.py::test_no_such_test`, `src/scones/*.py`"
    )
    assert missing_paths(text, tracked) == [
        (1, "src/scones/gone.py"),
        (3, "tests/test_docs.py::test_no_such_test"),
    ]


@pytest.mark.skipif(not (PROJECT_ROOT / ".git").exists(), reason="needs the git checkout")
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_project_path_in_the_docs_exists(doc: Path) -> None:
    missing = missing_paths(doc.read_text(), tracked_paths())
    assert not missing, "\n".join(f"{doc.name}:{n}: {path}" for n, path in missing)


def test_the_command_reference_is_every_commands_help() -> None:
    """docs/cli.md is rendered from the parsers: an option added, renamed or described
    anew must be regenerated (``make cli-reference``), or this fails."""
    from scones.cli.reference import commands, render

    page = (PROJECT_ROOT / "docs" / "cli.md").read_text()
    assert page == render(), "docs/cli.md is stale: run make cli-reference"
    # Every command and subcommand has its section, and no checkout's folder shows.
    for line, parser in commands(build_parser()):
        assert f"## {line}\n\n```text\nusage: {parser.prog} " in page, line
    assert str(PROJECT_ROOT) not in page and "(default: models/bicycle-motorcycle)" in page


def test_every_option_with_a_default_names_it_in_its_help() -> None:
    """The README sends readers to docs/cli.md for "every option, with its default": an
    option left out takes its default, so a help line that hides it (a benchmark's
    ``--images``, ``scones serve``'s timeouts) leaves the reader guessing."""
    from scones.cli.reference import commands

    hidden = []
    for line, parser in commands(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            # A default of 0 (which equals False) is a default the reader needs too.
            if not action.option_strings or action.default is False:
                continue
            if action.default in (None, [], ""):
                continue
            if action.default is argparse.SUPPRESS or action.help is argparse.SUPPRESS:
                continue
            shown = formatter._expand_help(action) if action.help is not None else ""
            if "default" not in shown.lower():
                hidden.append(f"{line} {action.option_strings[-1]}: {shown!r}")
    assert not hidden, "\n".join(hidden)
    bench_model = next(p for line, p in commands(build_parser()) if line == "scones bench model")
    assert "timed images per model (default: 200)" in bench_model.format_help()


def test_the_record_condition_quoted_in_the_architecture_is_the_one_written() -> None:
    """A reader writing their own consumer of the results table takes this quote as the
    rule; it must be the expression every record write carries."""
    from scones_core.records import RECORD_CONDITION_EXPRESSION

    text = " ".join((PROJECT_ROOT / "docs" / "architecture.md").read_text().split())
    assert f"`{RECORD_CONDITION_EXPRESSION}`" in text


def test_the_fewest_images_to_train_on_are_quoted_as_the_rule_gives_them() -> None:
    from scones_core.training_split import MEMBERS, VALIDATION_FRACTION, min_images_per_class

    readme = " ".join((PROJECT_ROOT / "README.md").read_text().split())
    assert f"a class with fewer than {min_images_per_class()} images to train on" in readme
    assert VALIDATION_FRACTION == 0.2 and "holds out a fifth" in readme
    assert f"folds the rest over {MEMBERS} ensemble members" in readme
    monitoring = " ".join((PROJECT_ROOT / "docs" / "monitoring.md").read_text().split())
    assert f"its {MEMBERS} ensemble members, {min_images_per_class()} with the defaults" in (
        monitoring
    )


def test_every_alarm_has_its_runbook_row() -> None:
    """An alarm reaches a person at any hour: docs/operations.md says, for each, what
    happened, what to do and how to know it is fixed."""
    from scones.template_params import load_template

    alarms = {
        name
        for name, resource in load_template()["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }
    rows = [
        line
        for line in (PROJECT_ROOT / "docs" / "operations.md").read_text().splitlines()
        if line.startswith("| `")
    ]
    documented = {name for row in rows for name in re.findall(r"`(\w+Alarm)`", row.split("|")[1])}
    assert documented == alarms
    assert all(len([c for c in row.split("|")[1:-1] if c.strip()]) == 4 for row in rows)
