"""The CLI's stage options come from the stage dataclasses: same names, types, defaults, help."""

from __future__ import annotations

import argparse
import ast
import dataclasses
from functools import cache
from pathlib import Path

import pytest

import taskmem_lab
from taskmem_lab.cli import COMMAND_PARAMS, build_parser, main
from taskmem_lab.cli.options import add_options, field_docs, params_from
from taskmem_lab.evaluation.qa import QAParams
from taskmem_lab.params import MemorizeParams
from taskmem_lab.perception.params import (
    AsrParams,
    FaceParams,
    IdentityParams,
    PerceptionChoices,
    VoiceParams,
)

PACKAGE = Path(taskmem_lab.__file__).resolve().parent


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _default(f: dataclasses.Field) -> object:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


@pytest.mark.parametrize("command", sorted(COMMAND_PARAMS))
def test_every_cli_default_is_its_dataclass_default(command):
    sub = _subparsers(build_parser())[command]
    by_dest = {a.dest: a for a in sub._actions}
    checked = 0
    for cls, only in COMMAND_PARAMS[command]:
        for f in dataclasses.fields(cls):
            if only is not None and f.name not in only:
                continue
            assert f.name in by_dest, f"{command}: no option for {cls.__name__}.{f.name}"
            action = by_dest[f.name]
            assert action.default == _default(f), (
                f"{command} --{f.name}: CLI default {action.default!r}, "
                f"{cls.__name__} default {_default(f)!r}"
            )
            if "choices" in f.metadata:
                assert list(action.choices) == list(f.metadata["choices"])
            checked += 1
    assert checked


@pytest.mark.parametrize("command", sorted(COMMAND_PARAMS))
def test_parsing_no_options_gives_the_dataclass_defaults(command, tmp_path):
    required = {
        "memorize": ["v.mp4", "--model", "fake"],
        "perceive": ["v.mp4"],
        "eval": ["videomme", "--memories", "m", "--answerer", "fake"],
        "judge-agreement": ["results", "--judge", "fake"],
        "bench": ["videomme", "--videos", "v", "--model", "fake"],
        "export-training": ["run", "--out", "o"],
        "score-memory": ["run", "--judge", "fake", "--video-judge", "fake"],
        "rollout": ["run", "--model", "fake"],
        "pairs": ["run", "--rollouts", "r", "--tasks", "t", "--judge", "f", "--video-judge", "f"],
        "adapt-export": ["--model", "hf:d", "--steer", "s.pt", "--out", "o"],
        "adapt": ["--model", "hf:d", "--pairs", "p.jsonl", "--out", "o"],
    }
    args = build_parser().parse_args([command, *required[command]])
    for cls, only in COMMAND_PARAMS[command]:
        built = params_from(cls, args)
        for f in dataclasses.fields(cls):
            if only is None or f.name in only:
                assert getattr(built, f.name) == getattr(cls(), f.name), f.name


def test_old_flag_spellings_still_work():
    args = build_parser().parse_args(
        ["memorize", "v.mp4", "--model", "fake", "--fps", "2", "--no-voices", "--embed-fps", "0"]
    )
    assert params_from(MemorizeParams, args).frame_fps == 2.0
    assert params_from(PerceptionChoices, args).voices is False
    assert FaceParams(embed_fps=params_from(PerceptionChoices, args).embed_fps).embed_fps is None
    args = build_parser().parse_args(
        ["eval", "videomme", "--memories", "m", "--answerer", "a", "--evidence-pad", "3"]
        + ["--bootstrap", "10", "--context", "evidence"]
    )
    assert params_from(QAParams, args).evidence_pad_s == 3.0
    assert args.n_boot == 10


def test_bad_choice_is_one_usage_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "videomme", "--memories", "m", "--answerer", "a", "--context", "nope"])
    assert exc.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_help_comes_from_the_field_docs():
    docs = field_docs(FaceParams)
    assert docs["face_fps"].startswith("frames per second sampled")
    assert "detected and tracked" in docs["embed_fps"]  # continuation lines are joined
    assert field_docs(IdentityParams)["face_keep"] == field_docs(IdentityParams)["face_cap"]
    for command, parts in COMMAND_PARAMS.items():
        sub = _subparsers(build_parser())[command]
        helps = {a.dest: a.help for a in sub._actions}
        for cls, only in parts:
            for f in dataclasses.fields(cls):
                if only is None or f.name in only:
                    assert helps[f.name], f"{command} --{f.name} has no help"


def test_add_options_types_lists_and_switches():
    @dataclasses.dataclass(frozen=True)
    class Probe:
        """Probe.

        Attributes:
            sizes: several sizes.
            on: a switch that is on.
            off: a switch that is off.
            limit: an optional number.
        """

        sizes: list[int] = dataclasses.field(default_factory=lambda: [1, 2])
        on: bool = True
        off: bool = False
        limit: float | None = None

    p = argparse.ArgumentParser()
    assert add_options(p, Probe) == ["sizes", "on", "off", "limit"]
    got = params_from(
        Probe, p.parse_args(["--sizes", "3", "4", "--no-on", "--off", "--limit", "2"])
    )
    assert got == Probe(sizes=[3, 4], on=False, off=True, limit=2.0)
    assert params_from(Probe, p.parse_args([])) == Probe()


# --------------------------------------------------------------------------- one definition


@cache
def _trees() -> list[tuple[Path, ast.Module]]:
    """Every module of the package, parsed once for the tests below."""
    paths = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in paths]


def test_perception_defaults_are_written_once():
    """No module outside perception/params.py spells the settled defaults as literals."""
    home = PACKAGE / "perception" / "params.py"
    offenders = []
    for path, tree in _trees():
        if path == home:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in ("tiny.en", "small"):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value!r}")
            if (
                isinstance(node, ast.keyword)
                and node.arg == "embed_fps"
                and isinstance(node.value, ast.Constant)
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} embed_fps=")
    assert not offenders, offenders
    assert AsrParams().model == "tiny.en" and FaceParams().embed_fps == 0.5


def _literal_defaults(cls: type) -> dict[str, object]:
    return {
        f.name: f.default
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING and f.default not in (None, "", False, True, 0)
    }


# How many model calls a resumable job keeps in flight is a job setting, not a stage's: the
# resumable-job rework (issue 13, jobs.py) gives it its one home. Until then it is exempt.
JOB_SETTINGS = {"concurrency"}


def test_no_function_or_option_repeats_a_stage_default():
    """A parameter named like a stage field never carries its own literal default elsewhere:
    not as a function argument default, not as an `add_argument(default=...)`."""
    stage_fields: dict[str, set[object]] = {}
    for parts in COMMAND_PARAMS.values():
        for cls, _ in parts:
            for name, value in _literal_defaults(cls).items():
                if name not in JOB_SETTINGS:
                    stage_fields.setdefault(name, set()).add(value)
    for cls in (FaceParams, AsrParams, VoiceParams, IdentityParams):
        for name, value in _literal_defaults(cls).items():
            stage_fields.setdefault(name, set()).add(value)
    offenders = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                positional = a.posonlyargs + a.args
                pairs = list(
                    zip(positional[len(positional) - len(a.defaults) :], a.defaults, strict=True)
                )
                pairs += [
                    (k, d)
                    for k, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)
                    if d is not None
                ]
                for arg, default in pairs:
                    if (
                        arg.arg in stage_fields
                        and isinstance(default, ast.Constant)
                        and default.value in stage_fields[arg.arg]
                        and default.value not in (None, "", False, True, 0)
                    ):
                        where = f"{path.relative_to(PACKAGE)}:{node.lineno}"
                        offenders.append(f"{where} {node.name}({arg.arg}={default.value!r})")
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") == "add_argument"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                dest = str(node.args[0].value).lstrip("-").replace("-", "_")
                for kw in node.keywords:
                    if kw.arg == "default" and dest in stage_fields:
                        offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} --{dest}")
    assert not offenders, "defaults written twice:\n" + "\n".join(offenders)


def test_docs_option_tables_are_up_to_date():
    from taskmem_lab.cli.docs import options_table, render_page

    page = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
    text = page.read_text(encoding="utf-8")
    assert render_page(text) == text, "run: python -m taskmem_lab.cli.docs docs/cli.md"
    for command in _subparsers(build_parser()):
        assert f"<!-- options: {command} -->" in text, f"docs/cli.md has no table for {command}"
    assert "`--embed-fps` EMBED_FPS | `0.5` |" in options_table("perceive")
