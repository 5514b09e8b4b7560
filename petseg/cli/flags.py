"""Command-line flags are checked: an unknown or abbreviated flag is refused, in one line.

argparse accepts any unambiguous prefix of a flag (``--overlay`` for
``--overlays``) and answers a mistake with a usage block; Beam's
``PipelineOptions`` drops flags it does not know with a log warning, so a typo
such as ``--max-batch-szie 4`` runs a job with the default. Here every command
refuses both with exit status 2 and one line, e.g.::

    train.py: error: unknown flag --epoch (did you mean --epochs?)

Beam is imported only inside :func:`beam_option_flags`: training's ``--help``
must answer without loading it.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import logging
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

# What argparse itself takes for a negative number rather than a flag.
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")
# A flag's name as the commands spell them; other dashed words are left to argparse,
# which has the better message for, e.g., "--class-weights -1,2" (a missing value).
_FLAG_NAME = re.compile(r"^--?[A-Za-z][\w.-]*$")


class UnknownFlagError(ValueError):
    """A flag that neither the command nor Beam knows; the message names it."""


def closest_match(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``name`` abbreviates, else the nearest by difflib (ratio 0.6 or more).

    Returns:
      A candidate, or ``None`` when none is close.
    """
    candidates = sorted(set(candidates))
    # The flag argparse would have expanded an abbreviation to, however short
    # ("--max" for "--max-batch-size" is too short for difflib's ratio).
    extensions = [candidate for candidate in candidates if candidate.startswith(name)]
    if len(extensions) == 1:
        return extensions[0]
    matches = difflib.get_close_matches(name, candidates, n=1)
    return matches[0] if matches else None


def unknown_message(kind: str, name: str, candidates: Iterable[str]) -> str:
    """``unknown KIND NAME``, with ``(did you mean X?)`` where a close match exists.

    Args:
      kind: what ``name`` was meant to be, e.g. ``"flag"`` or ``"command"``.
      name: what the user typed.
      candidates: the names that would have been accepted.
    """
    match = closest_match(name, candidates)
    hint = f" (did you mean {match}?)" if match else ""
    return f"unknown {kind} {name}{hint}"


def _looks_like_flag(arg: str) -> bool:
    """Whether argparse would read ``arg`` as a flag rather than a value (``-1`` is a value)."""
    return arg.startswith("-") and len(arg) > 1 and not _NEGATIVE_NUMBER.match(arg)


class StrictArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that takes flags only as spelled and errs in one line.

    ``allow_abbrev`` is always off. :meth:`parse_args` refuses the first unknown
    flag by name, suggesting the closest of the parser's own flags;
    :meth:`parse_known_args` still returns unknown arguments, so a caller can
    pass them on (and check them itself).
    """

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get("allow_abbrev", False):
            raise ValueError(f"allow_abbrev={kwargs['allow_abbrev']!r}: abbreviations are refused")
        kwargs["allow_abbrev"] = False
        # argparse has no public list of a parser's flags, so the parser keeps
        # its own as they are added (argparse's __init__ adds --help first).
        self.flags: list[str] = []
        self.subcommands: dict[str, argparse.ArgumentParser] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.flags.extend(action.option_strings)
        return action

    def add_argument_group(self, *args, **kwargs):
        """As argparse's; the group's flags are also this parser's :attr:`flags`."""
        group = super().add_argument_group(*args, **kwargs)
        add_to_group = group.add_argument

        def add_argument(*names, **options) -> argparse.Action:
            action = add_to_group(*names, **options)
            self.flags.extend(action.option_strings)
            return action

        group.add_argument = add_argument
        return group

    def add_subparsers(self, **kwargs):
        """As argparse's; each subcommand's parser is also in :attr:`subcommands`."""
        action = super().add_subparsers(**kwargs)
        # add_parser fills this mapping of names to parsers (the action's choices).
        self.subcommands = action.choices
        return action

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but the first unknown flag is named, with its closest match."""
        args = list(sys.argv[1:] if args is None else args)
        # Checked before parsing: argparse reports a missing required flag first,
        # and "--model is required" hides that it was typed as --modle.
        unknown = self._first_unknown_flag(args)
        if unknown:
            self.error(unknown_message("flag", unknown, parser_flags(self)))
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            flags = [arg for arg in extras if _looks_like_flag(arg)]
            if flags:
                name = flags[0].split("=", 1)[0]
                self.error(unknown_message("flag", name, parser_flags(self)))
            self.error(f"unexpected argument {extras[0]}")
        return parsed

    def _first_unknown_flag(self, args: Sequence[str]) -> str | None:
        """The first argument argparse would take for a flag that no parser here defines."""
        known = set(parser_flags(self))
        for arg in args:
            if arg == "--":  # the rest are positional arguments
                return None
            name = arg.split("=", 1)[0]
            # A short flag may carry its value: -n5.
            if _FLAG_NAME.match(name) and name not in known and arg[:2] not in known:
                return name
        return None

    def error(self, message: str) -> NoReturn:
        """Prints ``PROG: error: MESSAGE`` as one line on stderr and exits with status 2."""
        # No usage block: the one line names the mistake, and --help has the rest.
        line = " ".join(part.strip() for part in message.strip().splitlines())
        self.exit(2, f"{self.prog}: error: {line}\n")


def parser_flags(parser: StrictArgumentParser) -> list[str]:
    """Every flag ``parser`` and its subcommands' parsers accept."""
    # A subcommand's unknown flags reach the top parser's parse_args, so its flags count there.
    flags = list(parser.flags)
    for subparser in parser.subcommands.values():
        flags.extend(parser_flags(subparser))
    return flags


class _OptionFlags(StrictArgumentParser):
    """Collects the flags a Beam options class defines through its ``_add_argparse_args``.

    That class method is Beam's documented hook for defining options (custom
    options subclass ``PipelineOptions`` and override it), and it is the only
    place Beam says which spellings a flag has: ``PipelineOptions``'s public
    ``get_all_options`` gives destinations, not flags (``--experiment`` and
    ``--experiments`` share one). The hook calls ``add_value_provider_argument``,
    a method of Beam's own parser, which here is a plain flag.
    """

    def add_value_provider_argument(self, *args, **kwargs) -> argparse.Action:
        return self.add_argument(*args, **kwargs)


def _option_classes(base: type) -> list[type]:
    """``base``'s subclasses, recursively, one per name as Beam keeps them."""
    found: dict[str, type] = {}
    pending = list(base.__subclasses__())
    while pending:
        cls = pending.pop(0)
        # A main session can define a class twice; Beam keeps the first of each name.
        found.setdefault(str(cls), cls)
        pending.extend(cls.__subclasses__())
    return list(found.values())


@functools.cache
def _flags_of(classes: tuple[type, ...]) -> frozenset[str]:
    flags: set[str] = set()
    for cls in classes:
        # A subclass without its own _add_argparse_args would add its parent's again.
        if "_add_argparse_args" not in cls.__dict__:
            continue
        # One throwaway parser per class, so two classes that share a flag do not conflict.
        parser = _OptionFlags(add_help=False)
        cls._add_argparse_args(parser)
        flags.update(parser.flags)
    return frozenset(flags)


def beam_option_flags() -> frozenset[str]:
    """Every flag that Beam's ``PipelineOptions`` knows, e.g. ``--runner`` and ``--experiment``.

    Gathered as ``PipelineOptions.get_all_options`` does, from the
    ``_add_argparse_args`` of every ``PipelineOptions`` subclass (here also
    subclasses of subclasses, which a ``view_as`` parses); every spelling of a
    flag counts (``--experiments`` and ``--experiment`` share one ``dest``).
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    # Cached per set of classes: importing a runner or an options module
    # registers more, and their flags must count from then on.
    return _flags_of(tuple(_option_classes(PipelineOptions)))


# Runners whose job service adds options of its own at submission (Flink's
# --checkpointing_interval, say): Beam's PortableRunner asks the service for them.
JOB_SERVICE_RUNNERS = frozenset(
    {"PortableRunner", "FlinkRunner", "SparkRunner", "SamzaRunner", "PrismRunner"}
)
# How a job service names its options; the job's own flags use dashes.
_SERVICE_OPTION = re.compile(r"^--[a-z][a-z0-9_]*$")


def _runner(args: Sequence[str]) -> str | None:
    for index, arg in enumerate(args):
        if arg.startswith("--runner="):
            return arg.split("=", 1)[1]
        if arg == "--runner" and index + 1 < len(args):
            return args[index + 1]
    return None


def storage_option_parser(prog: str) -> StrictArgumentParser:
    """A parser of Beam's S3 and Azure filesystem flags (``--s3_endpoint_url``,
    ``--azure_connection_string``...), built by Beam's own option classes; Google
    Cloud Storage takes the machine's default credentials and needs none."""
    # Importing Beam warns, on the root logger, that BigQuery's optional client
    # is missing: nothing a training command's user can act on.
    logging.disable(logging.WARNING)
    try:
        from apache_beam.options.pipeline_options import AzureOptions, S3Options
    finally:
        logging.disable(logging.NOTSET)
    parser = StrictArgumentParser(prog=prog, add_help=False)
    for options in (S3Options, AzureOptions):
        options._add_argparse_args(parser)
    return parser


def apply_storage_flags(parser: StrictArgumentParser, storage_args: Sequence[str]) -> None:
    """Refuses (one line, exit 2) any of ``storage_args`` that is not one of Beam's
    filesystem flags (:func:`storage_option_parser`), then sets them for Beam's
    filesystems, so a command reads and writes buckets as the job does."""
    if not storage_args:
        return
    storage = storage_option_parser(parser.prog)
    try:
        check_beam_args(storage_args, parser_flags(parser), known=frozenset(parser_flags(storage)))
    except UnknownFlagError as error:
        parser.error(str(error))
    # A stray word, a missing value: one line and exit 2, as for any flag.
    storage.parse_args(storage_args)
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions(list(storage_args)))


def check_beam_args(
    args: Sequence[str], own_flags: Iterable[str], known: frozenset[str] | None = None
) -> None:
    """Refuses the first flag in ``args`` that neither Beam (or ``known``) nor the job knows.

    ``--name`` and ``--name=value`` count as flags, and so does ``-name``,
    which Beam drops as a single-dash flag; values such as ``DirectRunner`` or
    ``-1`` after a flag pass. Flags must be spelled in full: Beam parses with
    ``allow_abbrev=False`` and drops a prefix such as ``--direct_num_work``
    silently, so it is refused here.

    With a runner that submits to a job service (``--runner FlinkRunner``,
    ``PortableRunner``...), a ``--snake_case`` flag that is close to no flag
    here is let through: the service may define it, and Beam asks it at
    submission.

    Args:
      args: the job's arguments (its own flags and Beam's).
      own_flags: the job's flags as spelled, e.g. ``["--max-batch-size"]``;
        they are accepted, and suggested for a near miss.
      known: the Beam flags accepted, by default every one (:func:`beam_option_flags`).

    Raises:
      UnknownFlagError: ``unknown flag --max-batch-szie (did you mean --max-batch-size?)``.
    """
    beam_flags = beam_option_flags() if known is None else known
    own = frozenset(own_flags)
    service_options = _runner(args) in JOB_SERVICE_RUNNERS
    for arg in args:
        name = arg.split("=", 1)[0]
        if not _FLAG_NAME.match(name) or name in beam_flags or name in own:
            continue
        match = closest_match(name, own | beam_flags)
        if service_options and _SERVICE_OPTION.match(name) and match is None:
            continue
        hint = f" (did you mean {match}?)" if match else ""
        raise UnknownFlagError(f"unknown flag {name}{hint}")


# ---- Flags built from a frozen config dataclass: each field's default, type and
# help live once, on the field (petseg.settings.option).


def flag_name(field_name: str) -> str:
    """``fine_tune_epochs`` -> ``--fine-tune-epochs``."""
    return "--" + field_name.replace("_", "-")


def _value_type(annotation: Any) -> Any:
    """``int | None`` -> ``int``; ``tuple[str, ...]`` -> ``tuple``."""
    arguments = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) in (types.UnionType, typing.Union) and len(arguments) == 1:
        return _value_type(arguments[0])
    return typing.get_origin(annotation) or annotation


def add_config_flags(parser: argparse.ArgumentParser, config_class: type) -> None:
    """Adds a flag for every field of ``config_class`` made with :func:`option`.

    A ``bool`` field becomes ``--name`` (or ``--name/--no-name`` when it
    defaults to true); a ``tuple`` field without ``parse`` is a repeatable
    flag; any other takes one value of the field's type.
    """
    hints = typing.get_type_hints(config_class)
    groups: dict[str | None, Any] = {None: parser}
    for field in dataclasses.fields(config_class):
        if "help" not in field.metadata:
            continue
        meta = field.metadata
        if meta["group"] not in groups:
            groups[meta["group"]] = parser.add_argument_group(meta["group"])
        kind = _value_type(hints[field.name])
        shown = field.default is not None and kind is not bool and not meta["required"]
        settings: dict[str, Any] = {
            "help": meta["help"] + (" (default: %(default)s)" if shown else ""),
            "dest": field.name,
        }
        if kind is bool:
            settings["action"] = argparse.BooleanOptionalAction if field.default else "store_true"
            settings["default"] = field.default
        else:
            if kind is tuple and meta["parse"] is None:
                settings["action"] = "append"
            else:
                settings["type"] = _argparse_type(meta["parse"]) if meta["parse"] else kind
            if meta["const"] is not None:
                settings.update(nargs="?", const=meta["const"])
            settings["default"] = None if meta["required"] else field.default
            for key in ("choices", "metavar", "required"):
                if meta[key]:
                    settings[key] = meta[key]
        groups[meta["group"]].add_argument(flag_name(field.name), *meta["aliases"], **settings)


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, its ``ValueError`` shown by argparse in its own words."""

    def parse_flag(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse_flag.__name__ = parse.__name__
    return parse_flag


def config_values(config_class: type, args: argparse.Namespace) -> dict[str, Any]:
    """The values of ``config_class``'s flag fields in parsed ``args``, by field name."""
    return {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(config_class)
        if "help" in field.metadata
    }
