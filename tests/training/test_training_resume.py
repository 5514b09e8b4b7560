"""Never lose work: a training process killed mid-run resumes from its last finished epoch."""

import csv
import json
import os
import re
import subprocess

import pytest

from tests.training_runs import (
    ENVIRONMENT,
    FINE_TUNE_EPOCHS,
    FROZEN_EPOCHS,
    REPO,
    kill_when,
    train_command,
)


def finished_epochs(workdir) -> int:
    try:
        with open(os.path.join(workdir, "backup", "training_metadata.json")) as file:
            return int(json.load(file)["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def history_rows(workdir) -> list[dict]:
    with open(os.path.join(workdir, "logs", "history.csv"), newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_killed_run_resumes_from_last_finished_epoch_in_the_fine_tuning_phase(tmp_path):
    workdir = str(tmp_path / "run")
    command = train_command(f"--workdir={workdir}")
    # Killed once the frozen phase is over and the run is fine-tuning.
    kill_when(command, lambda: finished_epochs(workdir) >= FROZEN_EPOCHS + 1, REPO)
    done = finished_epochs(workdir)
    assert FROZEN_EPOCHS < done < FROZEN_EPOCHS + FINE_TUNE_EPOCHS
    assert not os.path.exists(os.path.join(workdir, "export"))
    before = history_rows(workdir)

    rerun = subprocess.run(
        command, cwd=REPO, env=ENVIRONMENT, capture_output=True, text=True, timeout=280
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    output = rerun.stdout + rerun.stderr
    resumed = re.search(r"resuming from .*: (\d+) epoch\(s\) already finished", output)
    assert resumed and int(resumed.group(1)) >= done
    # Keras' own progress lines: the rerun's first epoch is the one after the last finished one.
    epochs_run = [int(n) for n in re.findall(r"^Epoch (\d+)/\d+", output, re.MULTILINE)]
    assert epochs_run and epochs_run[0] == int(resumed.group(1)) + 1
    assert epochs_run[-1] == FROZEN_EPOCHS + FINE_TUNE_EPOCHS

    after = history_rows(workdir)
    assert after[: len(before)] == before  # the killed run's history is kept, not rewritten
    assert sorted({int(row["epoch"]) for row in after}) == list(
        range(FROZEN_EPOCHS + FINE_TUNE_EPOCHS)
    )
    assert os.path.isfile(os.path.join(workdir, "export", "saved_model.pb"))
    assert not os.path.exists(os.path.join(workdir, "backup"))
    assert os.path.isfile(os.path.join(workdir, "plots", "curves.png"))
