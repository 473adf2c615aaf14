"""The CLI as a layer: commands registered explicitly, errors a user can fix as one line, bugs with a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from transferlab import cli
from transferlab.cli import COMMANDS, ExitCode, build_parser
from transferlab.errors import ConfigError, TransferlabError

COMMAND_NAMES = ("inspect", "sample", "backbones", "train", "compare", "evaluate", "predict", "export", "report",
                 "explain", "serve", "audit", "extract")


def test_every_command_is_registered_once_and_helps():
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert set(COMMAND_NAMES) <= set(choices)
    assert len(COMMANDS) == len(set(COMMANDS))
    # Building twice registers nothing twice (no shared mutable registry).
    assert set(build_parser()._subparsers._group_actions[0].choices) == set(choices)


@pytest.mark.parametrize("command", ["report", "evaluate", "train"])
def test_python_m_cli_runs_each_command(command):
    out = subprocess.run([sys.executable, "-m", "transferlab.cli", command, "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"usage: transferlab {command}" in out.stdout


def test_train_options_come_from_the_config_declarations():
    from transferlab.training.config import TrainConfig, cli_settings

    parser = build_parser()
    args = parser.parse_args(["train", "data", "--dropout", "0.3", "--class-weight", "balanced", "--image-size",
                              "none"])
    assert args.dropout == 0.3 and args.class_weight == "balanced" and args.image_size is None
    help_text = parser._subparsers._group_actions[0].choices["train"].format_help()
    for f in cli_settings():
        assert "--" + f.name.replace("_", "-") in help_text
    assert f"(default {TrainConfig().dropout})" in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "data", "--strategy", "fine-tuning"])  # not one of the choices


def test_global_flags_work_after_the_command():
    args = build_parser().parse_args(["inspect", "-q", "data"])
    assert args.quiet is True
    args = build_parser().parse_args(["-q", "inspect", "data"])
    assert args.quiet is True  # the subparser's default does not reset it


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys, tmp_path):
    def user_error(args):
        raise ConfigError("dropout must be < 1, got 2. Pass --dropout 0.5.")

    def bug(args):
        raise ValueError("internal shape mismatch")

    parser = build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["backbones"].set_defaults(func=user_error)
    assert cli.main(["backbones"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.strip() == "error: dropout must be < 1, got 2. Pass --dropout 0.5." and "Traceback" not in err
    parser._subparsers._group_actions[0].choices["backbones"].set_defaults(func=bug)
    with pytest.raises(ValueError, match="internal shape mismatch"):
        cli.main(["backbones"])


def test_a_missing_path_is_a_one_line_error(capsys, tmp_path):
    code = cli.main(["inspect", str(tmp_path / "no-such-folder")])
    assert code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("error:") and "no-such-folder" in err and "Traceback" not in err


def test_errors_keep_their_builtin_types():
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, TransferlabError)
    from transferlab.data import DatasetError, ImageDecodeError

    assert issubclass(DatasetError, TransferlabError) and issubclass(ImageDecodeError, TransferlabError)
