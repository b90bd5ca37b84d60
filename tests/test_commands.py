"""The CLI's shared pieces: one registration path for every command, one set of evaluation options."""

from __future__ import annotations

import argparse

import pytest

from hf_hardneg.cli import COMMANDS, build_parser
from hf_hardneg.cli import main as cli_main


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings}


def test_every_command_is_registered_to_run_and_has_a_description():
    parsers = _subparsers(build_parser())
    assert set(COMMANDS) <= set(parsers)
    for name, parser in parsers.items():
        assert callable(parser.get_default("func")), f"hf-hardneg {name} has no run function"
        assert parser.description and parser.description.strip(), f"hf-hardneg {name} has no description"
    # by default a command's description is the first paragraph of its module's docstring
    from hf_hardneg.commands import compare

    assert parsers["compare"].description == compare.__doc__.split("\n\n")[0]


def test_evaluate_and_interpolate_read_the_evaluation_options_alike():
    parsers = _subparsers(build_parser())
    evaluate, interpolate = _options(parsers["evaluate"]), _options(parsers["interpolate"])
    shared = ["tasks", "coco_dir", "coco_split", "concepts", "concept_files", "case_insensitive", "source",
              "max_examples", "batch_size", "device", "no_progress"]
    for dest in shared:
        a, b = evaluate[dest], interpolate[dest]
        assert (a.option_strings, a.type, a.nargs, a.help) == (b.option_strings, b.type, b.nargs, b.help), dest
    assert evaluate["tasks"].default == "concept,retrieval"
    assert interpolate["tasks"].default == "concept,retrieval,zeroshot"


@pytest.mark.parametrize("command", [
    ["evaluate", "--model", "m", "--output", "out"],
    ["interpolate", "--base", "a", "--finetuned", "b", "--output", "out", "--evaluate"],
])
@pytest.mark.parametrize("option, value, message", [
    ("--batch-size", "0", "--batch-size: must be >= 1, got 0"),
    ("--max-examples", "-3", "--max-examples: must be >= 1, got -3"),
])
def test_bad_evaluation_numbers_are_refused_before_any_work(command, option, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*command, option, value])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_alpha_must_be_a_finite_number(capsys):
    with pytest.raises(SystemExit):
        cli_main(["interpolate", "--base", "a", "--finetuned", "b", "--output", "out", "--alpha", "0", "nan"])
    assert "--alpha: must be a finite number, got nan" in capsys.readouterr().err


def test_a_concept_file_of_the_wrong_type_is_one_line_of_bad_input(tmp_path, capsys):
    captions = tmp_path / "captions.txt"
    captions.write_text("a red car\n")
    concepts = tmp_path / "mine.yaml"
    concepts.write_text("- name: shapes\n  words: [1, 2]\n")
    assert cli_main(["stats", "--captions", str(captions), "--concept-file", str(concepts)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-hardneg stats: error: ") and "Traceback" not in err and len(err.splitlines()) == 1
    assert "keywords must be strings, got int: 1" in err
