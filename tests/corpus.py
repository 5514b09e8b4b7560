"""A corpus of hostile and odd inputs, built by the tests themselves (nothing is downloaded).

:func:`write_corpus` lays out one folder holding every kind of broken file a
batch job over millions of files meets, beside good images in every format
and mode, under names a shell or a URL parser would trip on. Each entry says
what must become of it: a mask of a given size, or an error record at a given
stage, of a given type, with a reason in its message.
"""

from __future__ import annotations

import os
import pathlib
import socket
import stat
from dataclasses import dataclass, field

import numpy as np

from tests.images import animated_gif, bomb_png, cmyk_jpeg, gradient, jpeg, png, png16

# The one big valid image: 48 megapixels, under the default --max-pixels of 64 million.
BIG_SIZE = (8000, 6000)


@dataclass(frozen=True)
class Mask:
    """A good image: its mask must have this width and height (after EXIF orientation)."""

    width: int
    height: int


@dataclass(frozen=True)
class Failure:
    """A bad input: its error record's stage, error type, and a word of its message."""

    stage: str
    error_type: str
    reason: str


@dataclass
class Corpus:
    """What :func:`write_corpus` built, relative to its root, and what must become of it."""

    root: pathlib.Path
    outside: pathlib.Path
    expected: dict[str, Mask | Failure] = field(default_factory=dict)
    # Cases this machine cannot build, with the reason (reported as skips).
    not_built: dict[str, str] = field(default_factory=dict)

    @property
    def good(self) -> dict[str, Mask]:
        return {k: v for k, v in self.expected.items() if isinstance(v, Mask)}

    @property
    def bad(self) -> dict[str, Failure]:
        return {k: v for k, v in self.expected.items() if isinstance(v, Failure)}


def _rgba(width: int, height: int) -> np.ndarray:
    alpha = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
    return np.dstack([gradient(width, height), alpha])


def good_files() -> dict[str, tuple[bytes, Mask]]:
    """Valid images in every format and mode, under awkward names."""
    card = gradient(40, 30)
    return {
        "one-pixel.png": (png(gradient(1, 1)), Mask(1, 1)),
        "cmyk.jpg": (cmyk_jpeg(card), Mask(40, 30)),
        "sixteen-bit.png": (png16(30, 40), Mask(40, 30)),
        "gray-alpha-la.png": (png(card, mode="LA"), Mask(40, 30)),
        "palette-p.png": (png(card, mode="P"), Mask(40, 30)),
        "rgba.png": (png(_rgba(40, 30)), Mask(40, 30)),
        "animated.gif": (animated_gif(card), Mask(40, 30)),
        # Stored 100 x 60; orientation 6 and 8 show it 60 x 100, 3 turns it upside down.
        "exif-rotated-6.jpg": (jpeg(gradient(100, 60), orientation=6), Mask(60, 100)),
        "exif-rotated-8.jpg": (jpeg(gradient(100, 60), orientation=8), Mask(60, 100)),
        "exif-rotated-3.jpg": (jpeg(gradient(100, 60), orientation=3), Mask(100, 60)),
        "name with spaces.jpg": (jpeg(card), Mask(40, 30)),
        "ünïcødé 猫.png": (png(card), Mask(40, 30)),
        "hash#1.jpg": (jpeg(card), Mask(40, 30)),
        "percent%20name%.jpg": (jpeg(card), Mask(40, 30)),
        "%2e%2e%2fescape.jpg": (jpeg(card), Mask(40, 30)),
        "-rf.jpg": (jpeg(card), Mask(40, 30)),
        "--model.jpg": (jpeg(card), Mask(40, 30)),
        # A folder named like an image is a folder: the image inside it is segmented.
        "folder.jpg/inside.png": (png(card), Mask(40, 30)),
        # A folder whose masks' folder is the mask path of conflict.jpg (below).
        "conflict.png/inside.jpg": (jpeg(card), Mask(40, 30)),
    }


def bad_files() -> dict[str, tuple[bytes, Failure]]:
    """Files that are not usable images, each with the error it must produce."""
    truncated = jpeg(gradient(200, 150))
    return {
        "empty.jpg": (b"", Failure("decode", "ImageDecodeError", "empty file")),
        "truncated.jpg": (
            truncated[: len(truncated) // 2],
            Failure("decode", "ImageDecodeError", "truncated"),
        ),
        "text.jpg": (
            b"just some notes, not a picture\n",
            Failure("decode", "ImageDecodeError", "not an image"),
        ),
        "page.png": (
            b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n",
            Failure("decode", "ImageDecodeError", "not an image"),
        ),
        "bomb.png": (bomb_png(50000, 50000), Failure("decode", "ImageDecodeError", "bomb")),
    }


def permissions_stop_reads(folder: pathlib.Path) -> bool:
    """Whether a file with mode 000 is unreadable to this process (not so for root)."""
    probe = folder / ".permission-probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    try:
        probe.read_bytes()
    except PermissionError:
        return True
    finally:
        probe.chmod(stat.S_IRUSR | stat.S_IWUSR)
        probe.unlink()
    return False


# Entries that are not plain files with their bytes: links, special files, awkward names.
SPECIAL: dict[str, Mask | Failure] = {
    # Its mask masks/conflict.png would be the folder of conflict.png/inside.jpg's mask.
    "conflict.jpg": Failure("match", "MaskCollisionError", "is the folder holding the mask"),
    # Links inside the root are followed; links leading out of it are refused.
    "alias-inside.jpg": Mask(40, 30),
    "escape-relative.jpg": Failure("match", "UnsafeFileError", "outside the input folder"),
    "escape-absolute.png": Failure("match", "UnsafeFileError", "outside the input folder"),
    "loop.jpg": Failure("read", "OSError", "Too many levels of symbolic links"),
    "dangling.png": Failure("read", "FileNotFoundError", "No such file"),
    # Reading a FIFO would block forever and a socket cannot be opened: refused at listing.
    "fifo.jpg": Failure("match", "UnsafeFileError", "not a regular file (a FIFO)"),
    "socket.png": Failure("match", "UnsafeFileError", "not a regular file (a socket)"),
    "unreadable.jpg": Failure("read", "PermissionError", "Permission denied"),
    # Named by the bytes b"latin1-\xe9t\xe9.jpg"; reported under this printable spelling.
    "latin1-\\xe9t\\xe9.jpg": Failure("match", "UnsafeFileError", "not valid UTF-8"),
}
BIG_NAME = "big-8000x6000.jpg"
# Below a linked folder that leads outside: never descended into, so neither segmented nor reported.
NOT_FOLLOWED = ("outside-folder/secret.jpg", "outside-folder/secret.png")
UNREADABLE_AS_ROOT = "permissions do not stop root from reading a mode-000 file"


def expected_outcomes(big: bool = True) -> dict[str, Mask | Failure]:
    """Every entry of the corpus and what must become of it (for parametrising tests)."""
    outcomes = {name: fate for name, (_, fate) in {**good_files(), **bad_files()}.items()}
    outcomes.update(SPECIAL)
    if big:
        outcomes[BIG_NAME] = Mask(*BIG_SIZE)
    return outcomes


def write_corpus(base: pathlib.Path, big: bool = True, unreadable: bool = True) -> Corpus:
    """Builds the corpus under ``base/in`` (with ``base/outside`` beside it).

    Args:
      base: an empty folder.
      big: also write the 8000 x 6000 JPEG (about a second to encode).
      unreadable: write the mode-000 file; pass ``False`` when the reader will
        run as root with its capabilities (the entry lands in ``not_built``).

    Returns:
      The :class:`Corpus`: root, outside folder, and every entry's fate.
    """
    root, outside = base / "in", base / "outside"
    corpus = Corpus(root, outside, expected_outcomes(big))
    root.mkdir(parents=True)
    outside.mkdir()

    def put(relative: str, data: bytes) -> pathlib.Path:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    for relative, (data, _) in {**good_files(), **bad_files()}.items():
        put(relative, data)
    if big:
        put(BIG_NAME, jpeg(gradient(*BIG_SIZE), quality=80))
    put("conflict.jpg", jpeg(gradient(20, 10)))

    (root / "alias-inside.jpg").symlink_to("name with spaces.jpg")
    (outside / "secret.jpg").write_bytes(jpeg(gradient(30, 20)))
    (outside / "secret.png").write_bytes(png(gradient(30, 20)))
    (root / "escape-relative.jpg").symlink_to("../outside/secret.jpg")
    (root / "escape-absolute.png").symlink_to(outside / "secret.png")
    (root / "outside-folder").symlink_to(outside, target_is_directory=True)
    (root / "loop.jpg").symlink_to("loop.jpg")
    (root / "dangling.png").symlink_to("no-such-file.png")
    os.mkfifo(root / "fifo.jpg")

    socket_path = root / "socket.png"
    if len(os.fsencode(socket_path)) < 100:
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(socket_path))
    else:
        corpus.not_built["socket.png"] = "the folder's path is too long for a Unix socket"

    if unreadable:
        put("unreadable.jpg", jpeg(gradient(40, 30))).chmod(0)
    else:
        corpus.not_built["unreadable.jpg"] = UNREADABLE_AS_ROOT

    (root / os.fsdecode(b"latin1-\xe9t\xe9.jpg")).write_bytes(jpeg(gradient(40, 30)))
    for name in corpus.not_built:
        del corpus.expected[name]
    return corpus
