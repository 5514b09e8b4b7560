"""A DoFn whose per-element work runs on a thread pool, so a worker's cores stay busy.

A Beam worker thread hands a fused stage one element at a time: while it
decodes an image, encodes a PNG or waits inside the model, nothing else of
that stage runs. The heavy steps of the segmentation job (JPEG decoding,
resizing, upsampling, PNG encoding, file writes) spend their time in C code
that releases the GIL, so on a pool they run side by side on every core and
alongside the model's own threads.

:class:`ThreadedDoFn` keeps Beam's contract for a batch job, whose elements
are all in the global window: outputs leave in input order with the
timestamp of the element they came from (a ``TimestampedValue`` from
``process``, Beam's ``GlobalWindows.windowed_value`` from ``finish_bundle``,
both public); an element of any other window is refused; at most
``max_in_flight`` elements are held, so memory stays bounded; outputs leave
at the pace inputs arrive (one finished element per new one); every element
is finished before its bundle is (``finish_bundle`` waits and emits the
rest), so a bundle that commits has emitted everything. Work that raises
fails the bundle, exactly as a synchronous ``process`` would.

The steps of a worker process share one pool per size, so ``threads`` is a
budget for the process, as the job's ``--threads`` says: its decode,
postprocess, write and statistics steps together run on that many threads,
not four times as many, and no more on a runner that processes several
bundles at once in one process (each bundle thread has its own DoFn
instances). Any idle thread takes whichever step has work.

:class:`ThreadedStep` makes one such DoFn a composite step of the job, whose
failed inputs leave on the ``errors`` output.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindow, GlobalWindows, TimestampedValue

from petseg.beam.records import ERRORS_TAG


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # Not on Linux.
        return os.cpu_count() or 1


_pools_lock = threading.Lock()
# threads -> (the pool, how many DoFn instances hold it)
_pools: dict[int, tuple[ThreadPoolExecutor, int]] = {}


def _acquire_pool(threads: int) -> ThreadPoolExecutor:
    """The process's shared pool of ``threads`` threads, started on first use."""
    with _pools_lock:
        pool, holders = _pools.get(threads, (None, 0))
        if pool is None:
            pool = ThreadPoolExecutor(threads, thread_name_prefix=f"petseg-{threads}")
        _pools[threads] = (pool, holders + 1)
        return pool


def _release_pool(threads: int) -> None:
    """Gives back a pool from :func:`_acquire_pool`; the last holder shuts it down."""
    with _pools_lock:
        pool, holders = _pools[threads]
        if holders > 1:
            _pools[threads] = (pool, holders - 1)
            return
        del _pools[threads]
    pool.shutdown(wait=True)


class ThreadedDoFn(beam.DoFn):
    """Base class: ``work(element)`` runs on a pool; its outputs are emitted in order.

    Subclasses implement :meth:`work`, which returns a list of outputs (plain
    values for the main output, :class:`~apache_beam.pvalue.TaggedOutput` for
    others). It runs on a pool thread, where Beam's metrics are not
    recorded (their container belongs to the bundle's thread), so counters
    are incremented in :meth:`emitted`, which runs on the bundle's thread.

    Args:
      threads: size of the pool, which every ThreadedDoFn of the process
        asking for the same size shares; ``None`` uses every core available
        to the process.
      max_in_flight: elements submitted but not yet emitted before
        ``process`` waits for the oldest; ``None`` is four per thread.
    """

    def __init__(self, threads: int | None = None, max_in_flight: int | None = None):
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self._threads = threads
        self._max_in_flight = max_in_flight
        self._pool: ThreadPoolExecutor | None = None
        self._pending: collections.deque[tuple[Future, Any, Any, Any]] = collections.deque()

    def work(self, element: Any) -> list[Any]:
        """The per-element work; runs on a pool thread. Returns the element's outputs."""
        raise NotImplementedError(f"{type(self).__name__} must implement work()")

    def emitted(self, output: Any) -> None:
        """Called on the bundle's thread for each output as it leaves (for counters)."""

    def setup(self) -> None:
        threads = self._threads or available_cores()
        self._limit = self._max_in_flight or 4 * threads
        self._pool = _acquire_pool(threads)
        self._pool_threads = threads

    def start_bundle(self) -> None:
        self._pending = collections.deque()

    def process(
        self, element: Any, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam
    ) -> Iterator[Any]:
        if not isinstance(window, GlobalWindow):
            raise ValueError(f"{type(self).__name__} runs in the global window only, not {window}")
        self._pending.append((self._pool.submit(self.work, element), timestamp))
        # One in, at most one out: the oldest leaves once it is done, or when
        # the pool is full (waiting for it). Emitting every finished element
        # at once would send a burst downstream, and while the next step (the
        # model) works through it no new element reaches this pool, which then
        # idles and makes the next step wait in turn.
        if len(self._pending) > self._limit or self._pending[0][0].done():
            yield from self._emit_oldest()

    def finish_bundle(self) -> Iterator[Any]:
        while self._pending:
            yield from self._emit_oldest(bundle_end=True)

    def teardown(self) -> None:
        if self._pool is not None:
            while self._pending:
                future = self._pending.popleft()[0]
                if not future.cancel():
                    future.exception()  # Let it finish: the pool outlives this DoFn.
            self._pool = None
            _release_pool(self._pool_threads)

    def _emit_oldest(self, bundle_end: bool = False) -> Iterator[Any]:
        future, timestamp = self._pending.popleft()
        for output in future.result():
            self.emitted(output)
            tag, value = (
                (output.tag, output.value) if isinstance(output, TaggedOutput) else (None, output)
            )
            # Outside process, Beam takes only values that carry their window.
            value = (
                GlobalWindows.windowed_value(value, timestamp)
                if bundle_end
                else TimestampedValue(value, timestamp)
            )
            yield value if tag is None else TaggedOutput(tag, value)


class ThreadedStep(beam.PTransform):
    """Base class of a step that runs one :class:`ThreadedDoFn`; returns ``(main, errors)``.

    A subclass names its DoFn and labels; it takes the DoFn's own arguments,
    so a driver builds the step as it would the DoFn. ``errors`` holds the
    DoFn's outputs tagged ``ERRORS_TAG``, ``main`` all the others.

    Attributes:
      fn_class: the DoFn the step runs.
      fn_label: the label of its ``ParDo`` inside the step.
      main_tag: the name of its main output.
    """

    fn_class: type[ThreadedDoFn]
    fn_label: str
    main_tag: str

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__()
        self._fn = self.fn_class(*args, **kwargs)

    def expand(self, elements):
        results = elements | self.fn_label >> beam.ParDo(self._fn).with_outputs(
            ERRORS_TAG, main=self.main_tag
        )
        return results[self.main_tag], results[ERRORS_TAG]
