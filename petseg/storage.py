"""Folders in object stores (``gs://``, ``s3://``, ``azfs://``...) through Beam's ``FileSystems``.

TensorFlow and Keras write their files (checkpoints, CSV and TensorBoard
logs, plots, the SavedModel) to local paths; TensorFlow alone also reaches
``gs://``, but nothing else without more packages. A training workdir in a
bucket is therefore worked on in a local folder and pushed to the bucket
through Beam's filesystems, which the segmentation job already uses for its
images, model and outputs: the same URLs and the same credentials flags
(``--s3_endpoint_url``...) serve both.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator

logger = logging.getLogger(__name__)

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# Files that say the rest of their folder is whole, uploaded after every
# other file of a push: an export's metadata, BackupAndRestore's epoch.
LAST_UPLOADED = frozenset({"petseg.json", "training_metadata.json"})


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL (``gs://``, ``s3://``...) rather than a local path."""
    return bool(_SCHEME.match(path))


def is_present(path: str, folder: bool = False) -> bool:
    """Whether a file, or with ``folder`` a folder, is there, through Beam's filesystems.

    An object store has no folders: one is there when something lies under its prefix.
    """
    from apache_beam.io.filesystems import FileSystems

    if FileSystems.exists(path):
        return True
    if not (folder and is_remote(path)):
        return False
    return bool(FileSystems.match([path.rstrip("/") + "/**"])[0].metadata_list)


def download_folder(url: str, target: str) -> list[str]:
    """Copies every object under the folder ``url`` into the local folder ``target``.

    Returns:
      The copied files' paths relative to ``target``, ``/``-separated.
    """
    from apache_beam.io.filesystems import FileSystems

    prefix = url.rstrip("/") + "/"
    copied = []
    for metadata in FileSystems.match([prefix + "**"])[0].metadata_list:
        relative = metadata.path[len(prefix) :]
        destination = os.path.join(target, *relative.split("/"))
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        with FileSystems.open(metadata.path) as source, open(destination, "wb") as file:
            shutil.copyfileobj(source, file)
        copied.append(relative)
    return copied


class FolderMirror:
    """A folder in a bucket, worked on in a local folder and pushed back.

    :meth:`pull` copies the bucket's files into the local folder;
    :meth:`push` uploads each local file that is new or changed since the
    last pull or push (by size and modification time) and deletes the
    objects whose local file is gone. A push uploads the files that vouch
    for their folder (:data:`LAST_UPLOADED`) last: an export's metadata or a
    backup's epoch in the bucket means the rest of it is there.
    """

    def __init__(self, url: str, local: str):
        self.url = url.rstrip("/")
        self.local = local
        self._pushed: dict[str, tuple[int, int]] = {}

    def _stamps(self) -> dict[str, tuple[int, int]]:
        stamps = {}
        for folder, _, names in os.walk(self.local):
            for name in names:
                status = os.stat(os.path.join(folder, name))
                relative = os.path.relpath(os.path.join(folder, name), self.local)
                stamps[relative.replace(os.sep, "/")] = (status.st_size, status.st_mtime_ns)
        return stamps

    def pull(self) -> int:
        """Copies what the bucket holds under the URL into the local folder; returns the count."""
        copied = download_folder(self.url, self.local)
        self._pushed = self._stamps()
        return len(copied)

    def push(self) -> None:
        """Makes the bucket's folder hold what the local folder holds."""
        from apache_beam.io.filesystems import FileSystems

        stamps = self._stamps()
        changed = [path for path, stamp in stamps.items() if self._pushed.get(path) != stamp]
        for relative in sorted(changed, key=lambda path: path.split("/")[-1] in LAST_UPLOADED):
            with open(os.path.join(self.local, *relative.split("/")), "rb") as source:
                with FileSystems.create(f"{self.url}/{relative}") as target:
                    shutil.copyfileobj(source, target)
            self._pushed[relative] = stamps[relative]
        gone = sorted(set(self._pushed) - set(stamps))
        if gone:
            FileSystems.delete([f"{self.url}/{relative}" for relative in gone])
            for relative in gone:
                del self._pushed[relative]
        if changed or gone:
            logger.info("pushed %d file(s), deleted %d, to %s", len(changed), len(gone), self.url)


@contextlib.contextmanager
def mirrored_folder(url: str) -> Iterator[FolderMirror]:
    """A :class:`FolderMirror` of ``url`` in a new temporary folder, pulled on entry.

    When the block ends normally the mirror is pushed; when it raises, the
    bucket keeps what earlier pushes left there (a run's last finished
    epoch), not the local folder's state at the fault. The local folder is
    removed either way.
    """
    mirror = FolderMirror(url, tempfile.mkdtemp(prefix="petseg-workdir-"))
    try:
        pulled = mirror.pull()
        if pulled:
            logger.info("pulled %d file(s) from %s", pulled, mirror.url)
        yield mirror
        mirror.push()
    finally:
        shutil.rmtree(mirror.local, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(path: str, prefix: str) -> Iterator[str]:
    """A hidden sibling folder of ``path`` to fill, which then replaces ``path`` whole.

    On a clean exit the folder is renamed to ``path`` (an existing ``path``
    is removed first); on any error it is removed and ``path`` is left as
    it was. A reader of ``path`` finds the old folder or the new one, never
    a half-written mix.

    Args:
      path: the folder to write.
      prefix: the start of the hidden folder's name, a dot first.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        yield staging
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
