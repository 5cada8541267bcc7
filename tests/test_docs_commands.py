"""Every command written in README.md and docs/ still parses with the program it names.

Users copy these commands. Each one is handed to its program's own ``main`` with
``ArgumentParser.parse_args`` stopped right after parsing, so an option that was renamed,
removed or given another type fails here, and nothing is trained or read.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# The program a command starts with, and the module whose main() parses its options.
PROGRAMS = {
    "recipes/train_prn.py": "prn_model.train_cli",
    "prn-train": "prn_model.train_cli",
    "-m prn_model.train_cli": "prn_model.train_cli",
    "recipes/benchmark_mtd.py": "recipes.benchmark_mtd",
    "prn-predict": "prn_model.predict",
    "-m prn_model.predict": "prn_model.predict",
    "-m prn_model.export": "prn_model.export",
    "-m prn_model.zoo": "prn_model.zoo",
    "-m prn_model.download": "prn_model.download",
    "anomgen": "anomgen.cli",
}
COMMAND_START = re.compile(
    r"^(torchrun\s|prn-(train|predict)\b|anomgen\s"
    r"|python3? (-m (prn_model|anomgen)|recipes/|benchmarks/|docs/))"
)
# Placeholders the docs write for a value: each is given a value of the right type.
PLACEHOLDER_VALUES = {"W": "0.5", "S": "0.5", "R": "0.2"}
# Code spans that name an option or a program in a sentence rather than give a command.
MENTIONS = {
    "anomgen preview --config",
    "anomgen preview: error: ...",
    "python -m prn_model.export --format onnx",
    "anomgen preview",
    "anomgen list",
    "prn-train:",
    "prn-predict",
    "prn-train",
    "torchrun",
}


def _code_lines(text: str) -> list[str]:
    """Lines of fenced blocks (continuations joined, comments cut) and inline code spans."""
    lines = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines += [line.split("  #")[0].strip() for line in joined.splitlines()]
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    lines += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
    return lines


def _retired(line: str, text: str) -> bool:
    """A benchmark script since removed, which the doc points to in git history."""
    script = re.match(r"python3? (benchmarks/\S+\.py)", line)
    return bool(script) and not (ROOT / script[1]).exists() and f":{script[1]}`" in text


def documented_commands() -> list[tuple[str, str]]:
    found = {}
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for line in _code_lines(text):
            if not COMMAND_START.match(line) or line in MENTIONS or " | " in line:
                continue
            if not _retired(line, text):
                found.setdefault(line, path.name)
    return sorted((name, line) for line, name in found.items())


def _concrete(command: str) -> list[str]:
    """The command as argv tokens, with the docs' placeholders filled in."""
    command = re.sub(r"\{(\w+),[^}]*\}", r"\1", command)  # seed{0,1,2}, {onnx,torchscript}
    command = re.sub(r"\[(--[^\]]*)\]", r"\1", command)  # [--band-sides top bottom]
    command = re.sub(r"\[[^\]]*\]", "", command)  # [change], [NAME ...]
    tokens = []
    for token in shlex.split(command):
        if token == "...":
            if tokens and tokens[-1].startswith("--"):
                tokens.append("X")  # --root ...
            continue
        tokens.append(PLACEHOLDER_VALUES.get(token, token))
    return tokens


def _program_and_argv(tokens: list[str]) -> tuple[str, list[str]]:
    if tokens[0] == "torchrun":  # torchrun's own options come before the script or -m module
        start = next(i for i, t in enumerate(tokens) if t.endswith(".py") or t == "-m")
        tokens = ["python", *tokens[start:]]
    if tokens[0] in PROGRAMS:
        return PROGRAMS[tokens[0]], tokens[1:]
    if tokens[1] == "-m":
        return PROGRAMS[f"-m {tokens[2]}"], tokens[3:]
    script = tokens[1]
    if script in PROGRAMS:
        return PROGRAMS[script], tokens[2:]
    return script.removesuffix(".py").replace("/", "."), tokens[2:]


class _Parsed(Exception):
    """Raised in place of running the program once its options have parsed."""


def test_the_docs_hold_commands_of_every_program():
    modules = {_program_and_argv(_concrete(line))[0] for _, line in documented_commands()}
    assert {"prn_model.train_cli", "recipes.benchmark_mtd", "anomgen.cli"} <= modules
    assert any(module.startswith("benchmarks.") for module in modules)


@pytest.mark.parametrize("doc, command", documented_commands())
def test_documented_command_parses(doc, command, monkeypatch, capsys):
    module, argv = _program_and_argv(_concrete(command))
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(parse_args(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    main = importlib.import_module(module).main
    try:
        main(argv)
    except _Parsed:
        return
    except SystemExit as exit_:
        if exit_.code == 0:  # --version and --help end the parse themselves
            return
        pytest.fail(f"{doc}: `{command}` does not parse ({exit_.code}): {capsys.readouterr().err}")
    pytest.fail(f"{doc}: `{command}` ran without parsing its options through argparse")


def test_placeholders_are_filled_and_mentions_are_not_commands():
    assert _concrete("prn-predict CHECKPOINT DIR --threshold W") == [
        "prn-predict",
        "CHECKPOINT",
        "DIR",
        "--threshold",
        "0.5",
    ]
    assert _concrete("x runs/seed{0,1,2}/a.pt --format {onnx,torchscript} [change] --out N") == [
        "x",
        "runs/seed0/a.pt",
        "--format",
        "onnx",
        "--out",
        "N",
    ]
    assert _concrete("x ... --root ... [--sides top bottom]") == [
        "x",
        "--root",
        "X",
        "--sides",
        "top",
        "bottom",
    ]
    torchrun = ["torchrun", "--nproc_per_node", "4", "-m", "prn_model.train_cli", "--steps", "2"]
    assert _program_and_argv(torchrun) == ("prn_model.train_cli", ["--steps", "2"])
    every_span = {line for path in DOCS for line in _code_lines(path.read_text("utf-8"))}
    assert MENTIONS <= every_span, "a mention left the docs: drop it from MENTIONS"
