"""``petseg report``: a self-contained page whose every image loads in a real browser."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from petseg.cli import main as cli
from petseg.report import build_report
from tests import beam_helpers

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Appended to a copy of the page only: reports each <img> as the browser loaded it.
PROBE = """<script>
window.addEventListener('load', () => {
  const images = Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,
    width: i.naturalWidth, height: i.naturalHeight}));
  const out = document.createElement('pre'); out.id = 'probe';
  out.textContent = JSON.stringify(images); document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def run_output(tmp_path_factory):
    from beam_jobs import segment

    model = beam_helpers.shared_tiny_model(tmp_path_factory)
    root = tmp_path_factory.mktemp("report")
    images = beam_helpers.write_image_tree(root / "images")
    output = root / "out"
    segment.run(["--input", str(images), "--model", str(model), "--output", str(output)])
    workdir = root / "training"
    (workdir / "plots").mkdir(parents=True)
    for name in ("curves.png", "confusion_matrix.png", "epoch_001.png", "epoch_002.png"):
        Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(workdir / "plots" / name)
    return output, workdir


def test_report_holds_every_section_self_contained(run_output):
    output, workdir = run_output
    path = build_report(str(output), str(workdir), samples=4, worst=2, show_progress=False)
    page = open(path, encoding="utf-8").read()
    summary = json.loads((output / "summary.json").read_text())
    sources = re.findall(r'<img src="([^"]+)"', page)
    # 2 charts + 4 samples + 2 least confident + curves, confusion matrix, last panel.
    assert len(sources) == 11
    assert all(source.startswith("data:image/") for source in sources)  # nothing external
    assert "epoch_002.png" in page and "epoch_001.png" not in page
    for figure in (summary["matched"], summary["masks_written"], summary["failed"]):
        assert f'<td class="figure">{figure}</td>' in page
    error_rows = page.split("<table class=errors>")[1].count("<tr>") - 1
    assert error_rows == summary["failed"] > 0
    assert "empty.jpg" in page and "truncated.jpg" in page


def test_report_overlays_show_the_mask(run_output):
    from petseg.report import load_run, overlay_thumbnail

    output, _ = run_output
    _, stats, _ = load_run(str(output))
    record = next(r for r in stats if r["path"].endswith("cat.jpg"))
    import io

    overlay = np.asarray(Image.open(io.BytesIO(overlay_thumbnail(record, str(output)))))
    assert overlay.shape == (record["height"], record["width"], 3)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium on this machine (Debian package 'chromium'; .ci/run installs it)")


def test_every_image_loads_in_headless_chromium(run_output, tmp_path):
    browser = _chromium()
    output, workdir = run_output
    path = build_report(str(output), str(workdir), samples=6, worst=3, show_progress=False)
    probed = tmp_path / "probed.html"
    probed.write_text(open(path, encoding="utf-8").read().replace("</body>", PROBE + "</body>"))
    profile = tmp_path / "profile"
    result = subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probed.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert match, f"no DOM from Chromium: {result.stderr[-2000:]}"
    loaded = json.loads(match.group(1).replace("&quot;", '"'))
    assert len(loaded) == 2 + 6 + 3 + 3
    assert all(image["complete"] and image["width"] > 0 for image in loaded), loaded
    summary = json.loads((output / "summary.json").read_text())
    assert f'<td class="figure">{summary["masks_written"]}</td>' in result.stdout
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={screenshot}",
            "--window-size=1280,2400",
            "--virtual-time-budget=10000",
            probed.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    assert pixels.std() > 10  # a rendered page, not a blank one


def test_cli_writes_the_report_and_refuses_a_non_run(run_output, tmp_path, capsys):
    output, _ = run_output
    (output / "report.html").unlink(missing_ok=True)
    assert cli.main(["report", str(output), "--no-progress"]) == 0
    assert (output / "report.html").is_file()
    capsys.readouterr()
    assert cli.main(["report", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("petseg report: error:") and "summary.json" in error
    assert "\n" not in error
