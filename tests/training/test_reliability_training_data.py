"""The bad-input corpus (tests/corpus.py) through the training folder readers.

Every pair is read while iterating the dataset to its end: bad pairs are
logged and skipped, never a crash mid-epoch; with ``strict=True`` they are
refused before training starts. Training follows links wherever they lead
(the data is the user's own; confinement is about what the job writes).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from petseg.training import data
from tests.corpus import Mask, permissions_stop_reads, write_corpus
from tests.images import gradient, jpeg, png

SIZE = 32
VALUE_MAP = {0: 1, 255: 0}
# Good for training though the job refuses them: links out of the folder are
# followed, a non-UTF-8 name is just a name, and no mask folder can clash.
GOOD_FOR_TRAINING = {
    "escape-relative.jpg": Mask(30, 20),
    "escape-absolute.png": Mask(30, 20),
    "latin1-\\xe9t\\xe9.jpg": Mask(40, 30),
    "conflict.jpg": Mask(20, 10),
}
# Good images whose label file is the problem.
BAD_LABELS = {
    "label-truncated.jpg": png(np.zeros((30, 40), np.uint8))[:40],
    "label-wrong-size.jpg": png(np.zeros((10, 10), np.uint8)),
    "label-unknown-values.jpg": png(np.full((30, 40), 7, np.uint8)),
}


def _name(relative: str) -> str:
    # The corpus lists a non-UTF-8 name under a printable spelling; on disk it is these bytes.
    return os.fsdecode(b"latin1-\xe9t\xe9.jpg") if relative.startswith("latin1-") else relative


def _label(width: int, height: int) -> bytes:
    label = np.zeros((height, width), np.uint8)
    label[:, : width // 2] = 255
    return png(label)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("training-corpus")
    corpus = write_corpus(base, unreadable=permissions_stop_reads(base))
    for name in BAD_LABELS:
        (corpus.root / name).write_bytes(jpeg(gradient(40, 30)))
    return corpus


@pytest.fixture(scope="module")
def expected(corpus):
    """Top-level entries (the readers are not recursive): name -> whether its pair is good."""
    fates = {
        _name(relative): isinstance(fate, Mask) or relative in GOOD_FOR_TRAINING
        for relative, fate in corpus.expected.items()
        if "/" not in relative
    }
    fates.update(dict.fromkeys(BAD_LABELS, False))
    return fates


def _label_size(corpus, name: str) -> tuple[int, int]:
    fate = GOOD_FOR_TRAINING.get(name, corpus.expected.get(name))
    return (fate.width, fate.height) if isinstance(fate, Mask) else (40, 30)


@pytest.fixture(scope="module")
def paired(corpus, expected, tmp_path_factory):
    masks = tmp_path_factory.mktemp("paired-masks")
    for name in expected:
        stem = os.path.splitext(name)[0]
        data_ = BAD_LABELS.get(name) or _label(*_label_size(corpus, name))
        (masks / f"{stem}.png").write_bytes(data_)
    return corpus.root, masks


@pytest.fixture(scope="module")
def oxford(corpus, expected, tmp_path_factory):
    """An Oxford-layout folder whose images are links to every corpus entry."""
    root = tmp_path_factory.mktemp("oxford-corpus")
    (root / "images").mkdir()
    (root / "annotations" / "trimaps").mkdir(parents=True)
    names = {}
    for index, name in enumerate(sorted(expected)):
        item = f"item_{index:02d}"
        names[item] = name
        (root / "images" / f"{item}.jpg").symlink_to(corpus.root / name)
        width, height = _label_size(corpus, name)
        trimap = BAD_LABELS.get(name) or png(np.full((height, width), 2, np.uint8))
        (root / "annotations" / "trimaps" / f"{item}.png").write_bytes(trimap)
    if BAD_LABELS:
        # Unknown trimap values for Oxford are anything but 1, 2, 3: 0 is one.
        item = next(i for i, n in names.items() if n == "label-unknown-values.jpg")
        (root / "annotations" / "trimaps" / f"{item}.png").write_bytes(
            png(np.zeros((30, 40), np.uint8))
        )
    (root / "annotations" / "trainval.txt").write_text(
        "".join(f"{item} 1 1 1\n" for item in names), encoding="utf-8"
    )
    return root, names


def _skipped(caplog) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.getMessage().startswith("skipping ")
    ]


@pytest.mark.slow
def test_paired_reader_skips_every_bad_pair_and_finishes_the_epoch(paired, expected, caplog):
    images, masks = paired
    caplog.set_level(logging.WARNING, logger="petseg.training.data.files")
    dataset, report = data.paired_dataset(str(images), str(masks), SIZE, VALUE_MAP)
    assert report.images_without_mask == () and report.masks_without_image == ()
    elements = list(dataset)
    assert len(elements) == sum(expected.values())
    for image, mask in elements:
        assert image.shape == (SIZE, SIZE, 3) and mask.shape == (SIZE, SIZE, 1)
        assert set(np.unique(mask.numpy())) <= {0, 1}
    skipped = _skipped(caplog)
    for name, good in expected.items():
        named = [line for line in skipped if f"{images}/{name}:" in line]
        assert len(named) == (0 if good else 1), (name, named)


@pytest.mark.slow
def test_paired_reader_strict_fails_fast_naming_the_count(paired, expected):
    images, masks = paired
    bad = sum(not good for good in expected.values())
    with pytest.raises(data.DataSourceError, match=f"^{bad} bad image/label pair"):
        data.paired_dataset(str(images), str(masks), SIZE, VALUE_MAP, strict=True)


@pytest.mark.slow
def test_oxford_reader_skips_every_bad_pair_and_finishes_the_epoch(oxford, expected, caplog):
    root, names = oxford
    caplog.set_level(logging.WARNING, logger="petseg.training.data.files")
    examples = data.oxford_examples(str(root), "trainval")
    # Broken links and FIFOs are listed too: reading them reports them.
    assert len(examples) == len(names)
    elements = list(data.oxford_dataset(str(root), "trainval", SIZE))
    assert len(elements) == sum(expected.values())
    skipped = _skipped(caplog)
    for item, name in names.items():
        named = [line for line in skipped if f"/{item}.jpg:" in line]
        assert len(named) == (0 if expected[name] else 1), (name, named)
    bad = sum(not good for good in expected.values())
    with pytest.raises(data.DataSourceError, match=f"^{bad} bad image/label pair"):
        data.oxford_dataset(str(root), "trainval", SIZE, strict=True)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    # Reading a FIFO without a writer would block the epoch forever.
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "mask.png").write_bytes(_label(4, 4))
    pair = data.files.LabelledFile(str(tmp_path / "pipe.jpg"), str(tmp_path / "mask.png"))
    table = data.files.lookup_table(VALUE_MAP)
    assert data.files.check_pairs([pair], table) == [
        (str(tmp_path / "pipe.jpg"), f"{tmp_path}/pipe.jpg is not a regular file")
    ]


def test_the_unreadable_pair_is_in_the_corpus(corpus, expected):
    if "unreadable.jpg" in corpus.not_built:
        pytest.skip(f"unreadable.jpg: {corpus.not_built['unreadable.jpg']}")
    assert expected["unreadable.jpg"] is False
