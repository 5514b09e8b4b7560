"""Flags are checked: an unknown or abbreviated flag is refused with exit 2 and one line.

Every command (train.py, train.py evaluate, petseg, petseg report, the demo and
the Beam job) names the flag it does not know and, where one is close, the flag
that was meant. The Beam job's leftover arguments are checked against every
flag Beam's PipelineOptions knows, which Beam itself would drop with a warning.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import train
from petseg.cli import demo
from petseg.cli import main as cli
from petseg.cli.flags import (
    StrictArgumentParser,
    UnknownFlagError,
    beam_option_flags,
    check_beam_args,
    closest_match,
    config_values,
)
from petseg.training.config import TrainConfig
from tests.conftest import REPO_ROOT

SEGMENT_FLAGS = ("--input", "--model", "--output", "--min-batch-size", "--max-batch-size")


def _refused(capsys, call, *argv) -> str:
    """Runs a command that must exit 2 through its parser; returns its only stderr line."""
    with pytest.raises(SystemExit) as exit_info:
        call(list(argv))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# --- the parser -------------------------------------------------------------


def _parser() -> StrictArgumentParser:
    parser = StrictArgumentParser(prog="tool")
    parser.add_argument("--model", required=True)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def test_parser_names_a_typo_before_the_missing_flag_it_was_meant_to_be(capsys):
    # argparse alone reports "--model is required", hiding the misspelling.
    line = _refused(capsys, _parser().parse_args, "--modle", "m")
    assert line == "tool: error: unknown flag --modle (did you mean --model?)"


def test_parser_names_a_typo_given_with_equals_and_omits_a_hint_when_nothing_is_close(capsys):
    line = _refused(capsys, _parser().parse_args, "--model", "m", "--max-batch-szie=4")
    assert line == "tool: error: unknown flag --max-batch-szie (did you mean --max-batch-size?)"
    line = _refused(capsys, _parser().parse_args, "--model", "m", "--zzzzzz")
    assert line == "tool: error: unknown flag --zzzzzz"


def test_parser_refuses_an_abbreviation_that_argparse_would_expand(capsys):
    line = _refused(capsys, _parser().parse_args, "--model", "m", "--max", "4")
    assert line == "tool: error: unknown flag --max (did you mean --max-batch-size?)"


def test_parser_errors_are_one_line_without_the_usage_block(capsys):
    line = _refused(capsys, _parser().parse_args, "--model", "m", "--seed", "x")
    assert line == "tool: error: argument --seed: invalid int value: 'x'"


def test_parser_takes_negative_numbers_as_values_and_full_flags_as_given():
    args = _parser().parse_args(["--model=m", "--seed", "-3", "--max-batch-size", "8"])
    assert (args.model, args.seed, args.max_batch_size) == ("m", -3, 8)


def test_parse_known_args_still_returns_unknown_flags_for_the_caller():
    args, rest = _parser().parse_known_args(["--model", "m", "--runner", "DirectRunner", "--max"])
    assert args.model == "m" and args.max_batch_size == 32
    assert rest == ["--runner", "DirectRunner", "--max"]


def test_parser_refuses_to_allow_abbreviations():
    with pytest.raises(ValueError, match="allow_abbrev"):
        StrictArgumentParser(allow_abbrev=True)


def test_closest_match_prefers_the_flag_an_abbreviation_stands_for():
    assert closest_match("--epoch", ["--epochs", "--seed"]) == "--epochs"
    assert closest_match("--m", ["--max-batch-size", "--seed"]) == "--max-batch-size"
    assert closest_match("--qqq", ["--epochs", "--seed"]) is None


# --- train.py, train.py evaluate, the demo ----------------------------------


def test_train_refuses_a_typo_with_its_closest_flag(capsys):
    line = _refused(capsys, train.main, "--epochz", "3")
    assert line == "train.py: error: unknown flag --epochz (did you mean --epochs?)"


def test_train_refuses_abbreviations(capsys):
    line = _refused(capsys, train.main, "--epoch", "3")
    assert line == "train.py: error: unknown flag --epoch (did you mean --epochs?)"
    line = _refused(capsys, train.main, "--work", "runs/x")
    assert line == "train.py: error: unknown flag --work (did you mean --workdir?)"


def test_train_takes_beams_storage_flags_and_only_those(capsys):
    # A bucket workdir's flags pass the check: the run goes on to refuse its config.
    line = _refused(capsys, train.main, "--s3_endpoint_url", "http://x", "--alpha", "0.3")
    assert line.startswith("train.py: error: alpha must be one of")
    line = _refused(capsys, train.main, "--s3_endpoint_ur", "http://x")
    assert (
        line == "train.py: error: unknown flag --s3_endpoint_ur (did you mean --s3_endpoint_url?)"
    )
    line = _refused(capsys, train.main, "--s3_region_name", "r", "stray")
    assert line == "train.py: error: unexpected argument stray"
    # Beam's other flags mean nothing to training.
    assert _refused(capsys, train.main, "--runner", "DirectRunner") == (
        "train.py: error: unknown flag --runner"
    )


def test_train_names_a_mistyped_command(capsys):
    line = _refused(capsys, train.main, "evalute", "--model", "m")
    assert line == "train.py: error: unknown command evalute (did you mean evaluate?)"


def test_train_flags_and_defaults_parse_as_before():
    args = train.build_parser().parse_args(
        ["--epochs", "3", "--seed", "-1", "--color-jitter", "0.2"]
    )
    assert (args.epochs, args.seed, args.colour_jitter) == (3, -1, 0.2)
    defaults = train.build_parser().parse_args([])
    assert defaults.workdir == "runs/train"
    # Every field's flag defaults to the field's own default: one place for each.
    assert config_values(TrainConfig, defaults) == dataclasses.asdict(TrainConfig())


def test_train_help_still_answers(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--help"])
    assert exit_info.value.code == 0
    assert "--fine-tune-epochs" in capsys.readouterr().out


def test_train_script_refuses_a_typo_in_one_line_without_loading_tensorflow():
    # A real process: stderr is the file descriptor, so anything TensorFlow printed would show.
    result = subprocess.run(
        [sys.executable, "train.py", "--batch-szie", "8"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "train.py: error: unknown flag --batch-szie (did you mean --batch-size?)"
    ]


def test_train_evaluate_refuses_a_typo_even_with_the_required_model_missing(capsys):
    line = _refused(capsys, train.main, "evaluate", "--modle", "runs/x/export")
    assert line == "train.py evaluate: error: unknown flag --modle (did you mean --model?)"


def test_train_evaluate_refuses_an_abbreviation(capsys):
    line = _refused(capsys, train.main, "evaluate", "--model", "m", "--data", "d")
    assert line == "train.py evaluate: error: unknown flag --data (did you mean --data-dir?)"


def test_demo_refuses_a_typo_and_an_abbreviation(capsys):
    line = _refused(capsys, demo.main, "--holdout-cout", "4")
    assert line == "petseg-demo: error: unknown flag --holdout-cout (did you mean --holdout-count?)"
    line = _refused(capsys, demo.main, "--work", "runs/x")
    assert line == "petseg-demo: error: unknown flag --work (did you mean --workdir?)"


def test_demo_flags_and_defaults_parse_as_before():
    args = demo.build_parser().parse_args([])
    assert (args.workdir, args.quick, args.holdout_count) == ("runs/demo", False, 149)


# --- petseg and petseg report -----------------------------------------------


def test_petseg_names_an_unknown_command_with_the_closest_one(capsys):
    assert cli.main(["trian", "--epochs", "3"]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "petseg: error: unknown command trian (did you mean train?)"
    ]
    assert captured.out == ""


def test_petseg_without_a_command_prints_its_usage_and_help_is_not_an_error(capsys):
    assert cli.main([]) == 2
    assert "petseg report OUT" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0
    assert "petseg report OUT" in capsys.readouterr().out


def test_petseg_report_refuses_a_typo_and_an_abbreviation(capsys, tmp_path):
    line = _refused(capsys, cli.main, "report", str(tmp_path), "--sampels", "3")
    assert line == "petseg report: error: unknown flag --sampels (did you mean --samples?)"
    line = _refused(capsys, cli.main, "report", "--work", str(tmp_path), str(tmp_path))
    assert line == "petseg report: error: unknown flag --work (did you mean --workdir?)"


# --- Beam's flags -------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--runner", "DirectRunner"],
        ["--direct_num_workers=2"],
        ["--direct_running_mode", "multi_processing"],
        ["--experiments", "a", "--experiments", "b"],
        ["--experiment", "a"],
        ["--job_endpoint", "localhost:8099"],
        ["--setup_file", "./setup.py"],
        ["--dataflow_service_options", "x"],
        ["--sdk_container_image", "i"],
        ["--no_use_public_ips"],
        ["--max-batch-size", "4"],
    ],
)
def test_check_beam_args_accepts_beam_flags_and_the_jobs_own(args):
    check_beam_args(args, SEGMENT_FLAGS)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--max-batch-szie", "4"],
            "unknown flag --max-batch-szie (did you mean --max-batch-size?)",
        ),
        (["--runer", "DirectRunner"], "unknown flag --runer (did you mean --runner?)"),
        (["--runner=DirectRunner", "--zzzzzz=1"], "unknown flag --zzzzzz"),
        # Beam's parser does not expand abbreviations either: it drops them.
        (
            ["--direct_num_work", "2"],
            "unknown flag --direct_num_work (did you mean --direct_num_workers?)",
        ),
        # Beam drops single-dash flags with a warning.
        (["-runner", "DirectRunner"], "unknown flag -runner (did you mean --runner?)"),
    ],
)
def test_check_beam_args_refuses_an_unknown_flag_with_its_closest_match(args, message):
    with pytest.raises(UnknownFlagError) as error:
        check_beam_args(args, SEGMENT_FLAGS)
    assert str(error.value) == message


def test_check_beam_args_takes_a_value_starting_with_a_dash_as_a_value():
    check_beam_args(["--direct_num_workers", "-1", "--runner", "DirectRunner"], SEGMENT_FLAGS)
    check_beam_args(["--max-batch-size", "-4", "--job_name=-x"], SEGMENT_FLAGS)
    # The check does look past such a value.
    with pytest.raises(UnknownFlagError, match="--runer"):
        check_beam_args(["--direct_num_workers", "-1", "--runer", "x"], SEGMENT_FLAGS)


def test_check_beam_args_reports_the_first_unknown_flag():
    with pytest.raises(
        UnknownFlagError, match=r"^unknown flag --overlay \(did you mean --overlays\?\)$"
    ):
        check_beam_args(["--runner", "x", "--overlay", "--runer", "y"], ["--overlays"])


def test_beam_option_flags_holds_every_spelling_and_is_cached():
    flags = beam_option_flags()
    # Two flags sharing one dest, and one whose dest is another option's.
    assert {"--experiments", "--experiment", "--no_use_public_ips", "--use_public_ips"} <= flags
    assert {"--runner", "--flink_master", "--environment_config", "--temp_location"} <= flags
    assert "--help" not in flags and "--max-batch-size" not in flags
    assert beam_option_flags() is flags


def test_flags_module_loads_neither_tensorflow_nor_beam():
    code = (
        "import sys, petseg.cli.flags\n"
        "loaded = {'tensorflow', 'apache_beam'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


# --- the Beam job (the flag check runs before the model and inputs are read) ---


def _segment_refused(capsys, tmp_path, *extra) -> str:
    from beam_jobs import segment

    argv = [
        "--input",
        str(tmp_path / "no-photos"),
        "--model",
        str(tmp_path / "no-model"),
        "--output",
        str(tmp_path / "out"),
        *extra,
    ]
    assert segment.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_segment_job_refuses_a_typo_before_reading_the_model(capsys, tmp_path):
    line = _segment_refused(capsys, tmp_path, "--max-batch-szie", "4")
    assert line == (
        "petseg-segment: error: unknown flag --max-batch-szie (did you mean --max-batch-size?)"
    )


def test_segment_job_refuses_an_abbreviation_of_its_own_flag(capsys, tmp_path):
    line = _segment_refused(capsys, tmp_path, "--overlay")
    assert line == "petseg-segment: error: unknown flag --overlay (did you mean --overlays?)"


def test_segment_job_refuses_a_mistyped_beam_flag(capsys, tmp_path):
    line = _segment_refused(capsys, tmp_path, "--runner", "DirectRunner", "--direct_num_work", "2")
    assert line == (
        "petseg-segment: error: unknown flag --direct_num_work (did you mean --direct_num_workers?)"
    )


def test_a_job_service_runner_may_define_flags_of_its_own():
    # Flink's job service adds options Beam's Python SDK does not know.
    check_beam_args(["--runner", "FlinkRunner", "--checkpointing_interval", "1000"], [])
    check_beam_args(["--runner=PortableRunner", "--externalized_checkpoints_enabled"], [])
    # A near miss of a known flag is still refused there, and nothing passes elsewhere.
    with pytest.raises(UnknownFlagError, match="did you mean --flink_master"):
        check_beam_args(["--runner", "FlinkRunner", "--flink_mastr", "host:8081"], [])
    with pytest.raises(UnknownFlagError, match="--checkpointing_interval"):
        check_beam_args(["--runner", "DirectRunner", "--checkpointing_interval", "1000"], [])
