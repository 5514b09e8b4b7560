"""ThreadedDoFn: work on a pool, outputs in input order with their own windows, bounded."""

from __future__ import annotations

import threading
import time

import apache_beam as beam
import pytest
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.utils.windowed_value import WindowedValue

from petseg.beam.threaded import ThreadedDoFn, available_cores


class SlowSquares(ThreadedDoFn):
    """Squares numbers, later ones finishing first; odd inputs also go to ``odd``."""

    def __init__(self, threads=None, max_in_flight=None):
        super().__init__(threads, max_in_flight)
        self._squared = Metrics.counter("test", "squared")

    def work(self, number: int) -> list:
        time.sleep(0.002 * (number % 5))
        outputs = [number * number]
        if number % 2:
            outputs.append(beam.pvalue.TaggedOutput("odd", number))
        return outputs

    def emitted(self, output) -> None:
        if not isinstance(output, beam.pvalue.TaggedOutput):
            self._squared.inc()


class Failing(ThreadedDoFn):
    def work(self, number: int) -> list:
        raise RuntimeError(f"cannot handle {number}")


def test_outputs_keep_their_timestamps_and_tags():
    numbers = list(range(40))
    with test_pipeline.TestPipeline() as pipeline:
        results = (
            pipeline
            | beam.Create(numbers)
            | beam.Map(lambda n: window.TimestampedValue(n, n))
            | beam.ParDo(SlowSquares(threads=3, max_in_flight=4)).with_outputs(
                "odd", main="squares"
            )
        )
        assert_that(
            results.squares
            | beam.Map(
                lambda square, w=beam.DoFn.WindowParam, t=beam.DoFn.TimestampParam: (
                    square,
                    isinstance(w, window.GlobalWindow),
                    int(t),
                )
            ),
            equal_to([(n * n, True, n) for n in numbers]),
            label="CheckSquares",
        )
        assert_that(
            results.odd | beam.Map(lambda n, t=beam.DoFn.TimestampParam: (n, int(t))),
            equal_to([(n, n) for n in numbers if n % 2]),
            label="CheckOdd",
        )


def test_an_element_outside_the_global_window_is_refused():
    pipeline = beam.Pipeline()
    _ = (
        pipeline
        | beam.Create(range(5))
        | beam.Map(lambda n: window.TimestampedValue(n, n))
        | beam.WindowInto(window.FixedWindows(10))
        | beam.ParDo(SlowSquares(threads=2))
    )
    with pytest.raises(Exception, match="runs in the global window only"):
        pipeline.run().wait_until_finish()


def test_counters_bumped_in_emitted_are_recorded():
    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create(range(25)) | beam.ParDo(SlowSquares(threads=2))
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("squared"))["counters"]
    assert [counter.committed for counter in counters] == [25]


def test_outputs_leave_in_input_order_and_in_flight_stays_bounded():
    fn = SlowSquares(threads=4, max_in_flight=3)
    fn.setup()
    fn.start_bundle()
    emitted = []
    try:
        for number in range(30):
            element = WindowedValue(number, 0, [window.GlobalWindow()])
            outputs = fn.process(element.value, element.timestamp, element.windows[0])
            # From process: timestamped values, in the element's own (global) window.
            emitted += [output for output in outputs if isinstance(output, window.TimestampedValue)]
            assert len(fn._pending) <= 3
        emitted += [output for output in fn.finish_bundle() if isinstance(output, WindowedValue)]
    finally:
        fn.teardown()
    assert [output.value for output in emitted] == [n * n for n in range(30)]


class Gated(ThreadedDoFn):
    """Squares numbers; the ``held`` ones wait in ``work`` until ``gate`` opens."""

    def __init__(self, held, threads=None, max_in_flight=None):
        super().__init__(threads, max_in_flight)
        self.held = set(held)
        self.gate = threading.Event()
        self.finished = threading.Semaphore(0)

    def work(self, number: int) -> list:
        if number in self.held:
            assert self.gate.wait(10), "the gate never opened"
            self.finished.release()
        return [number * number]


def test_each_new_element_lets_at_most_one_finished_element_out():
    # Finished elements leave one per new element, not in a burst: the pool
    # stays full while a slow next step works through what it was given.
    numbers = [4, 9, 14, 19, 0, 5, 10, 15, 20, 25]
    fn = Gated(held=numbers[:4], threads=2, max_in_flight=4)
    fn.setup()
    fn.start_bundle()
    per_call = []
    try:
        for number in numbers:
            outputs = fn.process(number, 0, window.GlobalWindow())
            per_call.append(
                [out.value for out in outputs if isinstance(out, window.TimestampedValue)]
            )
            if number == 19:  # Nothing could leave so far; now all four finish.
                fn.gate.set()
                assert all(fn.finished.acquire(timeout=10) for _ in range(4))
                time.sleep(0.05)
        rest = [out.value for out in fn.finish_bundle() if isinstance(out, WindowedValue)]
    finally:
        fn.gate.set()
        fn.teardown()
    assert per_call[:4] == [[], [], [], []]
    assert per_call[4:] == [[n * n] for n in numbers[:6]]
    assert rest == [n * n for n in numbers[6:]]


class Meet(ThreadedDoFn):
    """Two elements must be in ``work`` at the same time to pass the barrier."""

    def setup(self):
        super().setup()
        self._barrier = threading.Barrier(2, timeout=10)

    def work(self, number: int) -> list:
        self._barrier.wait()
        return [threading.get_ident()]


def test_work_runs_on_several_threads_at_once():
    with test_pipeline.TestPipeline() as pipeline:
        threads = (
            pipeline
            | beam.Create([1, 2])
            | beam.ParDo(Meet(threads=2))
            | beam.combiners.Count.PerElement()
            | beam.combiners.Count.Globally()
        )
        assert_that(threads, equal_to([2]))


def test_an_error_in_work_fails_the_pipeline():
    with pytest.raises(Exception, match="cannot handle"):
        with test_pipeline.TestPipeline() as pipeline:
            _ = pipeline | beam.Create([1, 2, 3]) | beam.ParDo(Failing(threads=2))


@pytest.mark.parametrize(("threads", "in_flight"), [(0, None), (None, 0)])
def test_bad_pool_sizes_are_refused(threads, in_flight):
    with pytest.raises(ValueError, match="must be at least 1"):
        SlowSquares(threads, in_flight)


def test_available_cores_is_positive():
    assert available_cores() >= 1


class WhichThread(ThreadedDoFn):
    """Passes each element on with the id of the pool thread that handled it."""

    def work(self, element) -> list:
        time.sleep(0.005)  # long enough that a pool grows to its full size
        number, threads = element if isinstance(element, tuple) else (element, ())
        return [(number, (*threads, threading.get_ident()))]


def test_steps_of_a_process_share_one_pool_of_the_asked_size():
    # --threads is a budget per worker process: two steps of 2 threads run on
    # 2 threads together, not 2 each.
    with test_pipeline.TestPipeline() as pipeline:
        threads = (
            pipeline
            | beam.Create(range(24))
            | "First" >> beam.ParDo(WhichThread(threads=2))
            | "Second" >> beam.ParDo(WhichThread(threads=2))
            | beam.FlatMap(lambda element: element[1])
            | beam.Distinct()
            | beam.combiners.Count.Globally()
        )
        assert_that(threads, equal_to([2]))


def test_a_shared_pool_is_shut_down_by_its_last_holder():
    first, second = WhichThread(threads=3), WhichThread(threads=3)
    first.setup()
    second.setup()
    pool = first._pool
    assert second._pool is pool
    first.teardown()
    assert pool.submit(int, "7").result() == 7  # still serving the second step
    second.teardown()
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(int, "7")
