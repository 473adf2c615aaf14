"""What a new user trips over on the training side (issue 16), each through the CLI where it is a CLI
matter: interrupts that say how to resume, honest wording, names that exist, `runs`, early checks."""

from __future__ import annotations

import json
import logging
import os
import sys

import pytest

import transferlab
from conftest import make_class_folders
from helpers import save_tiny_cnn
from transferlab.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("newcomer")
    backbone = save_tiny_cnn(root / "tiny.keras", batchnorm=True)
    data = make_class_folders(root / "data", {"red": 12, "green": 12, "blue": 12}, size=40)
    return root, backbone, data


def _args(root, backbone, name, *extra):
    return ["train", str(root / "data"), "--backbone", str(backbone), "--runs-dir", str(root / "runs"),
            "--name", name, "--cache-dir", str(root / "cache"), "--engine", "keras", "--epochs", "4", *extra]


def test_ctrl_c_during_extraction_says_how_to_resume_and_the_run_resumes(tiny, monkeypatch, capsys):
    root, backbone, _ = tiny
    import transferlab.api.training as training

    def interrupted(*args, **kwargs):  # what Ctrl-C does while the backbone runs over the images
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "extract_splits", interrupted)
    assert main(_args(root, backbone, "cut")) == 130
    err = capsys.readouterr().err
    run = root / "runs" / "cut"
    assert "Interrupted during feature extraction" in err and f"--resume {run}" in err
    assert json.loads((run / "config.json").read_text())["status"] == "interrupted"
    monkeypatch.undo()
    clf = transferlab.resume(run, show_progress=False)
    assert json.loads((run / "config.json").read_text())["status"] == "complete"
    assert clf.metadata["metrics"]["num_samples"] > 0


def test_metrics_on_validation_images_are_not_called_test_accuracy(tiny, capsys):
    root, backbone, _ = tiny
    assert main(_args(root, backbone, "noval", "--test-fraction", "0")) == 0
    out = capsys.readouterr().out
    assert "Validation accuracy" in out and "Test accuracy" not in out and "drove early stopping" in out


def test_reusing_a_finished_runs_name_offers_overwrite_not_resume(tiny, capsys):
    root, backbone, _ = tiny
    assert main(_args(root, backbone, "again")) == 0
    first = json.loads((root / "runs" / "again" / "config.json").read_text())["created"]
    capsys.readouterr()
    assert main(_args(root, backbone, "again")) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "--resume" not in err and "holds a finished run" in err
    assert main(_args(root, backbone, "again", "--overwrite")) == 0
    assert json.loads((root / "runs" / "again" / "config.json").read_text())["status"] == "complete"
    assert (root / "runs" / "again" / "model.keras").exists()
    assert json.loads((root / "runs" / "again" / "config.json").read_text())["created"] >= first


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tiny, capsys):
    root, backbone, _ = tiny
    precious = root / "runs" / "notes"
    precious.mkdir(parents=True)
    (precious / "thesis.txt").write_text("keep me")
    assert main(_args(root, backbone, "notes", "--overwrite")) == 2
    assert "not a transferlab run directory" in capsys.readouterr().err
    assert (precious / "thesis.txt").read_text() == "keep me"


def test_runs_lists_every_run_with_its_metrics(tiny, capsys):
    root, backbone, _ = tiny
    for name in ("list-a", "list-b"):
        assert main(_args(root, backbone, name)) == 0
    capsys.readouterr()
    assert main(["runs", "--runs-dir", str(root / "runs"), "--json", "--sort", "accuracy"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert {"list-a", "list-b"} <= set(by_name)
    assert by_name["list-a"]["status"] == "complete" and by_name["list-a"]["backbone"].endswith("tiny.keras")
    assert by_name["list-a"]["strategy"] == "feature-extraction" and by_name["list-a"]["split"] == "test"
    accuracies = [r["accuracy"] for r in rows if r["accuracy"] is not None]
    assert accuracies == sorted(accuracies, reverse=True)
    assert main(["runs", "--runs-dir", str(root / "runs")]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["name", "status", "created"] and "list-b" in table
    assert main(["runs", "--runs-dir", str(root / "nowhere")]) == 2
    assert "No runs folder" in capsys.readouterr().err


def test_a_backbone_typo_fails_before_the_dataset_is_checked(tiny, monkeypatch, capsys, caplog):
    root, _, data = tiny
    import transferlab.api.training as training

    def must_not_run(*args, **kwargs):
        raise AssertionError("the dataset was checked before the arguments")

    monkeypatch.setattr(training, "load_dataset", must_not_run)
    with caplog.at_level(logging.INFO, logger="transferlab"):
        code = main(["train", str(data), "--backbone", "efficientnet_lite9", "--runs-dir", str(root / "typo-runs")])
    assert code == 2
    assert "Did you mean" in capsys.readouterr().err
    assert "Run directory" not in caplog.text and not (root / "typo-runs").exists()


def test_fine_tune_settings_without_fine_tuning_are_warned_and_not_reported_as_used(tiny, caplog):
    root, backbone, _ = tiny
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        assert main(_args(root, backbone, "ignored", "--unfreeze", "5", "--fine-tune-epochs", "7")) == 0
    assert "--unfreeze has no effect" in caplog.text and "--fine-tune-epochs has no effect" in caplog.text
    html = (root / "runs" / "ignored" / "report.html").read_text()
    settings = html[html.index("Training settings"):html.index("Backbone</h3>")]
    assert "Given but not used" in settings and "unfreeze" in settings
    assert "fine_tune_lr" not in settings  # not given and not applicable: not listed at all


def test_cost_is_said_before_extraction_and_fine_tuning(tiny, caplog):
    root, backbone, data = tiny
    with caplog.at_level(logging.INFO, logger="transferlab"):
        transferlab.train(data, backbone=str(backbone), runs_dir=str(root / "runs"), name="cost",
                          cache_dir=str(root / "cost-cache"), engine="keras", epochs=2, strategy="fine-tune",
                          fine_tune_epochs=2, fine_tune_batch_size=4, fine_tune_views=0, show_progress=False)
    assert "Extracting features of 36 images" in caplog.text
    assert "per epoch (measured on the first steps); up to 2 epochs" in caplog.text
    # The rate measured there is the estimate of the next extraction with this backbone.
    make_class_folders(root / "more", {"red": 10, "green": 10}, size=40, seed=7)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="transferlab"):
        transferlab.train(root / "more", backbone=str(backbone), runs_dir=str(root / "runs"), name="cost2",
                          cache_dir=str(root / "cost-cache"), engine="keras", epochs=2, show_progress=False)
    assert "Extracting features of 20 images: about" in caplog.text and "measured last time" in caplog.text


def test_plain_progress_counts_in_words_and_slow_rates_per_item(capsys):
    from transferlab.progress import format_rate, plural, progress_bar

    with progress_bar(total=None, desc="Training head", unit="epoch") as bar:
        bar.update(33)
    assert "Training head: 33 epochs in" in capsys.readouterr().err
    assert format_rate(3, 20.0, "formats") == "6.7 s/format" and format_rate(50, 2.0, "img") == "25.0 img/s"
    assert plural(1, "group") == "1 group" and plural(2, "group") == "2 groups"


def test_plain_progress_gives_a_measured_eta_while_a_long_stage_runs(monkeypatch, capsys):
    import transferlab.progress as progress

    monkeypatch.setattr(progress, "ESTIMATE_AFTER_S", 0.0)
    with progress.progress_bar(total=100, desc="Extracting features", unit="img") as bar:
        bar.update(10)
        bar.update(10)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("Extracting features: 10/100 img at") and "left (ETA" in err[0]
    assert len(err) == 2  # one estimate, then the summary


def test_inspect_keeps_its_file_checks_in_the_given_cache_dir(tiny, capsys, monkeypatch):
    import transferlab.data.check_cache as check_cache

    # Files changed within the last seconds are not remembered (their stamp may still move);
    # these were written moments ago by the fixture.
    monkeypatch.setattr(check_cache, "RACY_SECONDS", -1.0)
    root, _, data = tiny
    cache = root / "inspect-cache"
    assert main(["inspect", str(data), "--cache-dir", str(cache)]) == 0
    assert any(cache.rglob("*")), "the file-check cache was not written into --cache-dir"
    assert "dataset.bad_files" not in capsys.readouterr().err


def test_explain_prints_each_file_once_and_hints_at_case(tiny, capsys):
    root, backbone, data = tiny
    assert main(_args(root, backbone, "explained")) == 0
    capsys.readouterr()
    out_dir = root / "cams"
    assert main(["explain", str(root / "runs" / "explained"), str(data / "red"), "--out", str(out_dir)]) == 0
    out = capsys.readouterr()
    printed = [line for line in (out.out + out.err).splitlines() if ".png" in line]
    assert len(printed) == 12 == len(set(printed)) == len(list(out_dir.glob("*.png")))
    assert main(["explain", str(root / "runs" / "explained"), str(data / "red"), "--class", "RED"]) == 2
    assert "Did you mean 'red'? Class names are case-sensitive" in capsys.readouterr().err


def test_explain_on_an_exported_file_says_to_pass_the_run_directory(tiny, tmp_path, capsys):
    from helpers import save_tiny_onnx_classifier

    onnx = save_tiny_onnx_classifier(tmp_path / "model.onnx", ["blue", "green", "red"])
    assert main(["explain", str(onnx), str(tiny[2] / "red")]) == 2
    assert "pass the run directory" in capsys.readouterr().err


def test_quiet_native_logs_hides_native_lines_but_not_our_warnings(capfd):
    from transferlab._tf import quiet_native_logs

    with quiet_native_logs():
        os.write(2, b"I0000 00:00:1796226413.038390    5823 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"fully_quantize: 0, inference_type: 6, input_inference_type: UINT8, output_inference_type: UINT8\n")
        print("warning: a real warning", file=sys.stderr)
    err = capfd.readouterr().err
    assert "warning: a real warning" in err and "port.cc" not in err and "XNNPACK" not in err
    assert "fully_quantize" not in err
    with pytest.raises(RuntimeError):
        with quiet_native_logs():
            os.write(2, b"E0000 00:00:1.0 1 convert.cc:1] why the conversion failed\n")
            raise RuntimeError("conversion failed")
    assert "why the conversion failed" in capfd.readouterr().err  # shown when it explains a failure


def test_export_quiet_shows_no_converter_chatter(tiny, capfd):
    root, backbone, _ = tiny
    assert main(_args(root, backbone, "exported-quietly")) == 0
    capfd.readouterr()
    assert main(["export", str(root / "runs" / "exported-quietly"), "--format", "tflite", "-q"]) == 0
    err = capfd.readouterr().err
    assert "I0000" not in err and "W0000" not in err and "INFO: " not in err, err


def test_report_says_why_the_losses_differ_and_marks_the_kept_epochs(tiny):
    from transferlab.evaluation.plots import kept_epochs

    root, backbone, _ = tiny
    assert main(_args(root, backbone, "curves")) == 0

    history = {"val_loss": [0.9, 0.5, 0.7, 0.8, 0.6, 0.4, 0.45]}
    assert kept_epochs(history, [4]) == [1, 5]  # per phase: head epoch 2, fine-tune epoch 6
    assert kept_epochs({"loss": [1.0]}) == []
    html = (root / "runs" / "curves" / "report.html").read_text()
    curves = html[html.index('id="curves"'):]
    assert "label smoothing 0.1" in curves and "plain log-loss" in curves and "early stopping kept" in curves


def test_evaluate_hints_at_a_class_name_that_differs_only_in_case(tiny, tmp_path, capsys):
    root, backbone, _ = tiny
    assert main(_args(root, backbone, "cased")) == 0
    make_class_folders(tmp_path / "new", {"Red": 3, "green": 3}, size=40, seed=3)
    capsys.readouterr()
    assert main(["evaluate", str(root / "runs" / "cased"), str(tmp_path / "new")]) == 2
    assert "Did you mean 'red'? Class names are case-sensitive" in capsys.readouterr().err
