"""The demo: train, export, segment held-out images, score them and write the report."""

import json

import pytest

from petseg.cli import demo


def test_plan_uses_real_photos_only_when_both_shared_files_exist(
    tmp_path, oxford_sample, encoder_weights
):
    real = demo.plan(str(oxford_sample), str(encoder_weights), quick=False)
    assert real.holdout_source == str(oxford_sample) and real.config.encoder_weights == str(
        encoder_weights
    )
    assert real.config.tta_flip and real.config.serving_size == 160
    synthetic = demo.plan(str(oxford_sample), str(tmp_path / "missing.h5"), quick=False)
    assert synthetic.holdout_source is None and synthetic.config.dataset == "synthetic"
    assert synthetic.config.encoder_weights == "none"


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_offline_on_synthetic_data(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PETSEG_OXFORD_SAMPLE", raising=False)
    monkeypatch.delenv("PETSEG_ENCODER_WEIGHTS", raising=False)
    assert demo.main(["--workdir", str(tmp_path / "demo"), "--quick", "--holdout-count", "4"]) == 0
    printed = capsys.readouterr().out
    for line in ("model export", "masks", "report", "held-out scores", "4 masks written, 0 failed"):
        assert line in printed
    # The demo exports the OpenVINO format, so the job's auto backend runs it.
    assert "images/s on openvino" in printed
    output = tmp_path / "demo" / "segmented"
    summary = json.loads((output / "summary.json").read_text())
    assert summary["matched"] == summary["masks_written"] == 4 and summary["reconciliation"]["ok"]
    assert len(list((output / "masks").glob("*.png"))) == 4
    assert (output / "report.html").stat().st_size > 10_000
    scores = json.loads((tmp_path / "demo" / "holdout_scores.json").read_text())
    assert scores["images"] == 4 and 0.0 <= scores["mean_iou"] <= 1.0
    assert summary["backend"] == scores["backend"] == "openvino"
    # COCO for the evaluators, and the least sure images (all 4 of 4) as review tasks.
    assert summary["coco"]["images"] == 4 and (output / "coco.json").is_file()
    tasks = json.loads((tmp_path / "demo" / "review" / "tasks.json").read_text())
    assert len(tasks) == 4 and (tmp_path / "demo" / "review" / "labeling-config.xml").is_file()


@pytest.mark.parametrize(
    ("step_seconds", "expected"),
    [
        (0.1, 18),  # a fast machine: the most epochs
        (0.3, 12),  # 300 s / (1.8 * 37 steps * 0.3 s) = 15 epochs, 3 of them frozen
        (1.25, 4),  # a slow machine: no fewer than the fewest
    ],
)
def test_fine_tuning_epochs_fit_the_training_budget(monkeypatch, step_seconds, expected):
    monkeypatch.setattr(demo, "fine_tune_step_seconds", lambda config: step_seconds)
    config = demo.plan("/nowhere", None, quick=False).config
    config = demo.dataclasses.replace(config, batch_size=8, val_fraction=0.2, epochs=3)
    fitted = demo.fit_to_budget(config, train_examples=370, budget_s=300.0)
    assert fitted.fine_tune_epochs == expected
    assert fitted.epochs == 3 and fitted.image_size == config.image_size


def test_a_fine_tuning_step_is_timed_on_this_machine():
    config = demo.plan("/nowhere", None, quick=True).config
    config = demo.dataclasses.replace(config, image_size=32, batch_size=2)
    seconds = demo.fine_tune_step_seconds(config)
    assert 0 < seconds < 60
