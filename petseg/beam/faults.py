"""Two kinds of failure, kept apart (ARCHITECTURE.md, contract 9).

A fault of an *input* (a file that cannot be read, decoded or named) is the
input's: it is dead-lettered as an error record and the job goes on. A
fault of the *environment* (the output filesystem full or failing, a write
denied, a remote storage error, a model that cannot be loaded) says nothing
about the image that met it: the step raises :class:`EnvironmentFault`, the
runner retries the bundle (Dataflow four times), and if the fault persists
the job fails and the driver prints one line. No image is ever recorded as
failed because of it, and rerunning the same command resumes.

Writes are also retried in place a few times with exponential backoff
(Beam's own retry helper), so a storage hiccup of a second costs a pause,
not a bundle.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Iterator
from typing import TypeVar

from apache_beam.io.filesystem import BeamIOError
from apache_beam.utils import retry

# The one prefix a driver looks for in whatever a runner reports of a failed job
# (a portable runner hands back the worker's traceback as text).
FAULT_PREFIX = "petseg environment fault: "

# The operating system's reasons that belong to an input file: it vanished
# since the listing, is unreadable, is a folder or a link loop, or its name is
# too long. Anything else reading an input (EIO, a remote 5xx) is the storage's.
INPUT_READ_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.EACCES,
        errno.EPERM,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.ELOOP,
        errno.ENAMETOOLONG,
        errno.ENXIO,
    }
)
# Writing a mask, only a name too long for the output filesystem is the input's
# fault (the mask's name comes from the image's). Everything else is OUT's.
INPUT_WRITE_ERRNOS = frozenset({errno.ENAMETOOLONG})

WRITE_RETRIES = 3
WRITE_RETRY_DELAY_S = 0.25

T = TypeVar("T")


class EnvironmentFault(RuntimeError):
    """A fault of the job's environment, raised so that the runner retries the bundle.

    Built with :func:`environment_fault`; it takes its message alone, as any
    exception Beam re-raises with the failing step's name appended.
    """


def environment_fault(action: str, error: BaseException) -> EnvironmentFault:
    """The fault of ``action`` failing with ``error``: ``petseg environment fault: ACTION: ERROR``."""
    return EnvironmentFault(f"{FAULT_PREFIX}{action}: {describe(error)}")


def fault_message(error: BaseException) -> str | None:
    """The fault's own words in whatever a runner raised, or ``None`` for another failure.

    A runner may re-raise the worker's exception, wrap it, or hand back its
    traceback as text; the prefix is found in any of them.
    """
    for text in (str(cause) for cause in _causes(error)):
        start = text.find(FAULT_PREFIX)
        if start >= 0:
            line = text[start + len(FAULT_PREFIX) :].splitlines()[0]
            return line.split(" [while running")[0].strip()
    return None


# How Beam's portable runners (Flink's job server among them) report a job the
# engine ended: ``Pipeline ID failed in state FAILED: CAUSE``.
_ENGINE_FAILURE = re.compile(r"^Pipeline \S+ failed in state (\w+): (.*)$", re.DOTALL)
# A worker's exception comes back as its Python traceback inside the cause.
_PYTHON_TRACEBACK = "Traceback (most recent call last)"


def engine_failure_message(error: BaseException) -> str | None:
    """The engine's own reason for ending the job, or ``None`` where the job's code failed.

    A portable runner reports two kinds of failure alike: the job's code
    raising on a worker (its Python traceback is in the report: a defect,
    whose traceback is worth keeping) and the engine giving up on its own
    machinery (a TaskManager lost for good, no slots, restarts exhausted),
    which says nothing about any input and which a rerun resumes after. Only
    the second gets a one-line message: the state and the cause's first line,
    Java package names dropped.
    """
    match = _ENGINE_FAILURE.match(str(error))
    if match is None or _PYTHON_TRACEBACK in match[2]:
        return None
    state, cause = (
        match[1],
        match[2].strip().splitlines()[0] if match[2].strip() else "no reason given",
    )
    cause = re.sub(r"\b(?:[a-z_][a-z0-9_]*\.)+(?=[A-Z]\w*(?:Exception|Error)\b)", "", cause)
    if len(cause) > 240:
        cause = cause[:237].rstrip() + "..."
    return f"the runner ended the job in state {state}: {cause}"


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what it wraps: Beam's ``BeamIOError`` details, ``IOError(OSError)``."""
    yield error
    if isinstance(error, BeamIOError) and isinstance(error.exception_details, dict):
        for inner in error.exception_details.values():
            if isinstance(inner, BaseException):
                yield from _causes(inner)
    if error.args and isinstance(error.args[0], BaseException):
        yield from _causes(error.args[0])
    if error.__cause__ is not None:
        yield from _causes(error.__cause__)


def _os_error(error: BaseException) -> OSError | None:
    """The operating system's error behind ``error``, however it was wrapped."""
    return next(
        (cause for cause in _causes(error) if isinstance(cause, OSError) and cause.errno),
        None,
    )


def error_number(error: BaseException) -> int | None:
    """The operating system's error number behind ``error``, however it was wrapped."""
    cause = _os_error(error)
    return cause.errno if cause is not None else None


def describe(error: BaseException) -> str:
    """``OSError: [Errno 28] No space left on device: 'x'``, from the innermost cause."""
    innermost = _os_error(error) or error
    text = str(innermost).splitlines()[0] if str(innermost) else repr(innermost)
    return f"{type(innermost).__name__}: {text}"


def is_input_read_fault(error: BaseException) -> bool:
    """Whether failing to read an input file is the file's fault (see the module docstring)."""
    return isinstance(error, FileNotFoundError) or error_number(error) in INPUT_READ_ERRNOS


def is_input_write_fault(error: BaseException) -> bool:
    """Whether failing to write an input's mask is the input's fault (its name)."""
    return error_number(error) in INPUT_WRITE_ERRNOS


def _retryable(error: BaseException) -> bool:
    return not isinstance(error, EnvironmentFault) and not is_input_write_fault(error)


def with_write_retries(function: Callable[[], T], action: str) -> T:
    """Runs a write, retrying it a few times; a persistent failure is an environment fault.

    Args:
      function: the write, with no arguments.
      action: what it does, for the fault's message (``"write OUT/masks/a.png"``).

    Raises:
      EnvironmentFault: the write still failed after its retries.
      OSError: a fault of the input (a mask name too long), not retried.
    """
    retrying = retry.with_exponential_backoff(
        num_retries=WRITE_RETRIES,
        initial_delay_secs=WRITE_RETRY_DELAY_S,
        retry_filter=_retryable,
        logger=lambda *args, **kwargs: None,
    )(function)
    try:
        return retrying()
    except EnvironmentFault:
        raise
    except Exception as error:
        if is_input_write_fault(error):
            raise
        raise environment_fault(action, error) from error
