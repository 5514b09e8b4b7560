"""Settings declared once: a config dataclass field that is also a command-line flag.

The config classes (:class:`petseg.training.config.TrainConfig`,
:class:`petseg.beam.job.SegmentConfig`) declare each setting with
:func:`option`: its default, its type and its help live on the field. The
command line (:mod:`petseg.cli.flags`) builds its flags from those fields, so
the configs do not depend on the command line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any


def option(
    default: Any,
    help: str,  # noqa: A002 - argparse's own name for it
    *,
    group: str | None = None,
    aliases: Sequence[str] = (),
    choices: Sequence[Any] | None = None,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
    required: bool = False,
    const: Any = None,
) -> Any:
    """A config field that is also a flag, ``--field-name`` (:func:`petseg.cli.flags.add_config_flags`).

    Args:
      default: the field's default (``None`` for an optional setting).
      help: the flag's help, which is also the field's documentation.
      group: the help section the flag is listed under.
      aliases: more spellings of the flag (``--color-jitter``).
      choices: the values allowed.
      metavar: how the value is shown in the help.
      parse: turns the flag's text into the field's value (``"1,1,2"`` -> a tuple).
      required: the flag must be given (the field still needs a default for dataclasses).
      const: the value of the flag given alone, without a value.
    """
    metadata = {
        "help": help,
        "group": group,
        "aliases": tuple(aliases),
        "choices": tuple(choices) if choices is not None else None,
        "metavar": metavar,
        "parse": parse,
        "required": required,
        "const": const,
    }
    return dataclasses.field(default=default, metadata=metadata)
