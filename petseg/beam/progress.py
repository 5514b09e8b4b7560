"""A progress line for runs on the DirectRunner.

The DirectRunner runs the whole pipeline inside ``Pipeline.run()`` and only
then hands back its metrics, so the driver cannot poll counters while it
works. What it can see is the output: a background thread counts the masks
written since the job started (through ``FileSystems``, so any output
filesystem works) and prints ``done / matched`` with a rate. On Dataflow or
Flink, the runner's own UI shows the job's ``petseg`` counters instead.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from apache_beam.io.filesystems import FileSystems

from petseg.beam.io import join_path
from petseg.beam.layout import TEMP_MARKER

DEFAULT_INTERVAL_S = 5.0
# Listing a big output folder is not free: wait at least this many listings' time between them.
_LISTING_COST_FACTOR = 10


def count_masks(masks_dir: str, since: float) -> int:
    """Masks under ``masks_dir`` last written at or after ``since`` (seconds since the epoch)."""
    metadata = FileSystems.match([join_path(masks_dir, "**")])[0].metadata_list
    return sum(
        1
        for entry in metadata
        if entry.path.endswith(".png")
        and TEMP_MARKER not in entry.path
        and (entry.last_updated_in_seconds or since) >= since
    )


def progress_line(done: int, total: int, elapsed_s: float) -> str:
    """``petseg-segment: 120/4000 masks written (3.0%), 41.2 images/s``."""
    percent = 100.0 * done / total if total else 100.0
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    return f"petseg-segment: {done}/{total} masks written ({percent:.1f}%), {rate:.1f} images/s"


class ProgressReporter:
    """Prints a progress line every few seconds while a ``with`` block runs.

    Args:
      masks_dir: ``OUT/masks``.
      total: files matched (the denominator).
      interval_s: seconds between lines (longer when listing is slow).
      stream: where lines go.
    """

    def __init__(
        self,
        masks_dir: str,
        total: int,
        interval_s: float = DEFAULT_INTERVAL_S,
        stream: TextIO | None = None,
    ):
        self._masks_dir = masks_dir
        self._total = total
        self._interval_s = interval_s
        self._stream = stream if stream is not None else sys.stderr
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_wall = 0.0
        self._started = 0.0
        self.lines_printed = 0

    def __enter__(self) -> ProgressReporter:
        # File times have coarse resolution on some filesystems; a second's slack is harmless.
        self._started_wall = time.time() - 1.0
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="petseg-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)

    def _loop(self) -> None:
        wait_s = self._interval_s
        while not self._stop.wait(wait_s):
            listing_started = time.monotonic()
            try:
                done = count_masks(self._masks_dir, self._started_wall)
            except Exception:  # Progress is a courtesy; it never fails the job.
                continue
            listing_s = time.monotonic() - listing_started
            wait_s = max(self._interval_s, _LISTING_COST_FACTOR * listing_s)
            elapsed_s = time.monotonic() - self._started
            print(progress_line(done, self._total, elapsed_s), file=self._stream, flush=True)
            self.lines_printed += 1
