"""Data sources agree on one element; labels map correctly; augmentation keeps pairs aligned."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from petseg.imageio import decode_image, decode_mask, decode_resized
from petseg.training import data
from petseg.training.data import tfds_source
from tests import images

SIZE = 64
ELEMENT_SPEC = (
    tf.TensorSpec([SIZE, SIZE, 3], tf.uint8),
    tf.TensorSpec([SIZE, SIZE, 1], tf.uint8),
)


def _strip_names(spec):
    return tuple(tf.TensorSpec(s.shape, s.dtype) for s in spec)


@pytest.fixture
def small_oxford(tmp_path, oxford_sample):
    """A copy of six real pairs in the Oxford layout, plus the odd files of the real dataset."""
    names = ["Abyssinian_100", "Abyssinian_101", "Bengal_95", "Bengal_97"]
    root = tmp_path / "oxford"
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    for name in names + ["Abyssinian_34"]:
        shutil.copy(oxford_sample / "images" / f"{name}.jpg", root / "images")
        shutil.copy(
            oxford_sample / "annotations" / "trimaps" / f"{name}.png",
            root / "annotations" / "trimaps",
        )
    # The official download also holds an RGBA PNG named .jpg (Abyssinian_5).
    photo = Image.open(oxford_sample / "images" / "Abyssinian_100.jpg").convert("RGBA")
    photo.save(root / "images" / "Abyssinian_5.jpg", format="PNG")
    shutil.copy(
        oxford_sample / "annotations" / "trimaps" / "Abyssinian_100.png",
        root / "annotations" / "trimaps" / "Abyssinian_5.png",
    )
    (root / "annotations" / "trainval.txt").write_text(
        "".join(f"{n} 1 1 1\n" for n in names[:2] + ["Abyssinian_5"])
    )
    (root / "annotations" / "test.txt").write_text("".join(f"{n} 6 1 2\n" for n in names[2:]))
    return root


def test_real_trimaps_map_to_class_indices(oxford_sample):
    for example in data.oxford_examples(str(oxford_sample), "test")[:5]:
        with open(example.mask_path, "rb") as file:
            trimap = decode_mask(file.read())
        assert set(np.unique(trimap)) <= {1, 2, 3}
        table = data.files.lookup_table(data.TRIMAP_TO_CLASS)
        _, mask = data.files.read_pair(example, table)
        np.testing.assert_array_equal(mask[:, :, 0], trimap - 1)


def test_real_trimap_class_shares_match_the_dataset(oxford_sample):
    masks = np.concatenate(
        [m.numpy().ravel() for _, m in data.oxford_dataset(str(oxford_sample), "test", SIZE)]
    )
    shares = np.bincount(masks, minlength=3) / masks.size
    # The dataset's README: about 28% pet, 59.5% background, 12.6% border.
    assert 0.2 < shares[0] < 0.36 and 0.5 < shares[1] < 0.7 and 0.08 < shares[2] < 0.18


def test_oxford_split_lists_drive_the_split(small_oxford):
    trainval = data.oxford_examples(str(small_oxford), "trainval")
    test = data.oxford_examples(str(small_oxford), "test")
    assert [os.path.basename(e.image_path) for e in trainval] == [
        "Abyssinian_100.jpg",
        "Abyssinian_101.jpg",
        "Abyssinian_5.jpg",
    ]
    assert len(test) == 2
    assert len(data.oxford_examples(str(small_oxford), "all")) == 6


def test_odd_real_files_decode(small_oxford, oxford_sample):
    gif = decode_image((oxford_sample / "images" / "Abyssinian_34.jpg").read_bytes())
    assert gif.shape == (202, 250, 3)
    rgba = decode_image((small_oxford / "images" / "Abyssinian_5.jpg").read_bytes())
    photo = decode_image((oxford_sample / "images" / "Abyssinian_100.jpg").read_bytes())
    np.testing.assert_array_equal(rgba, photo)
    elements = list(data.oxford_dataset(str(small_oxford), "all", SIZE))
    assert len(elements) == 6


def test_not_an_oxford_folder_is_a_clear_error(tmp_path):
    with pytest.raises(data.DataSourceError, match="not an Oxford-IIIT Pet folder"):
        data.oxford_examples(str(tmp_path), "trainval")


def test_synthetic_files_read_back_as_their_examples(tmp_path):
    files = data.write_synthetic_files(str(tmp_path), str(tmp_path), 3, 48, seed=2)
    assert [os.path.basename(f.image_path) for f in files] == [
        "synthetic_0000.jpg",
        "synthetic_0001.jpg",
        "synthetic_0002.jpg",
    ]
    for index, example in enumerate(files):
        image, mask = data.synthetic_example(index, 48, seed=2)
        with open(example.mask_path, "rb") as file:
            np.testing.assert_array_equal(decode_mask(file.read()), mask[:, :, 0] + 1)
        with open(example.image_path, "rb") as file:
            decoded = decode_image(file.read())
        # The example's own pixels, through JPEG at quality 90.
        assert decoded.shape == image.shape
        np.testing.assert_array_equal(decoded, decode_image(images.jpeg(image, quality=90)))
    # Oxford's trimap values, so the Oxford label mapping reads them.
    pairs = list(data.files_dataset(files, 48, data.TRIMAP_TO_CLASS).as_numpy_iterator())
    np.testing.assert_array_equal(pairs[1][1], data.synthetic_example(1, 48, seed=2)[1])


def _write_paired(root, count=3, extra_image=True, extra_mask=True):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(count):
        image, mask = data.synthetic_example(index, 48)
        Image.fromarray(image).save(root / "images" / f"car_{index}.jpg")
        # A Carvana-style 0/255 foreground mask, named with a suffix.
        foreground = np.where(mask[:, :, 0] == 0, 255, 0).astype(np.uint8)
        Image.fromarray(foreground).save(root / "masks" / f"car_{index}_mask.png")
    if extra_image:
        Image.fromarray(images.gradient(48, 48)).save(root / "images" / "lonely.jpg")
    if extra_mask:
        Image.fromarray(np.zeros((48, 48), np.uint8)).save(root / "masks" / "orphan.png")


def test_paired_folder_matches_by_stem_and_reports_leftovers(tmp_path):
    _write_paired(tmp_path)
    report = data.pair_folders(str(tmp_path / "images"), str(tmp_path / "masks"))
    assert len(report.pairs) == 3
    assert [os.path.basename(p) for p in report.images_without_mask] == ["lonely.jpg"]
    assert [os.path.basename(p) for p in report.masks_without_image] == ["orphan.png"]
    with pytest.raises(data.DataSourceError, match="unpaired"):
        data.paired_dataset(
            str(tmp_path / "images"), str(tmp_path / "masks"), SIZE, {0: 1, 255: 0}, strict=True
        )


def test_paired_folder_applies_the_value_map(tmp_path):
    _write_paired(tmp_path, extra_image=False, extra_mask=False)
    dataset, _ = data.paired_dataset(
        str(tmp_path / "images"), str(tmp_path / "masks"), SIZE, data.parse_value_map("0:1,255:0")
    )
    masks = [mask.numpy() for _, mask in dataset]
    assert len(masks) == 3
    assert set(np.unique(np.concatenate([m.ravel() for m in masks]))) == {0, 1}


def test_value_map_errors_show_the_input():
    with pytest.raises(ValueError, match="'0-1'"):
        data.parse_value_map("0-1")


def test_bad_pairs_are_skipped_not_fatal(tmp_path):
    _write_paired(tmp_path, extra_image=False, extra_mask=False)
    (tmp_path / "images" / "car_1.jpg").write_bytes(b"truncated")
    dataset, _ = data.paired_dataset(
        str(tmp_path / "images"), str(tmp_path / "masks"), SIZE, {0: 1, 255: 0}
    )
    assert len(list(dataset)) == 2
    with pytest.raises(data.DataSourceError, match="car_1.jpg"):
        data.paired_dataset(
            str(tmp_path / "images"), str(tmp_path / "masks"), SIZE, {0: 1, 255: 0}, strict=True
        )


def test_unknown_mask_values_are_a_bad_pair(tmp_path):
    _write_paired(tmp_path, extra_image=False, extra_mask=False)
    dataset, _ = data.paired_dataset(
        str(tmp_path / "images"), str(tmp_path / "masks"), SIZE, {0: 1}
    )
    assert list(dataset) == []


def test_synthetic_is_deterministic_and_has_all_classes():
    first, mask = data.synthetic_example(3, SIZE, seed=7)
    again, mask_again = data.synthetic_example(3, SIZE, seed=7)
    other, _ = data.synthetic_example(4, SIZE, seed=7)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(mask, mask_again)
    assert not np.array_equal(first, other)
    assert set(np.unique(mask)) == {0, 1, 2}
    # Learnable: the pet's pixels differ from the background's on average.
    pet = first[mask[:, :, 0] == 0].mean(axis=0)
    background = first[mask[:, :, 0] == 1].mean(axis=0)
    assert np.abs(pet - background).max() > 20


@pytest.fixture
def tfds_reachable(monkeypatch):
    """Stands in for a machine that reaches the TFDS host; mock_data supplies the examples."""
    monkeypatch.setattr(tfds_source, "_check_reachable", lambda builder: None)


def test_tfds_source_yields_the_common_element(tfds_reachable):
    # TFDS hands the image as its file bytes (SkipDecoding), so it is decoded by the
    # project's own decode_resized, exactly as the file sources and the Beam job do.
    photos = [images.jpeg(images.gradient(300, 260)), images.png(images.gradient(90, 70))]
    trimaps = [np.full((260, 300, 1), 1, np.uint8), np.full((70, 90, 1), 3, np.uint8)]
    asked = {}

    def as_dataset(builder, *args, **kwargs):
        asked.update(kwargs)
        return tf.data.Dataset.from_generator(
            lambda: iter(
                {"image": p, "segmentation_mask": t} for p, t in zip(photos, trimaps, strict=True)
            ),
            output_signature={
                "image": tf.TensorSpec([], tf.string),
                "segmentation_mask": tf.TensorSpec([None, None, 1], tf.uint8),
            },
        )

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        dataset = data.tfds_dataset("train", SIZE)
        assert _strip_names(dataset.element_spec) == ELEMENT_SPEC
        elements = [(image.numpy(), mask.numpy()) for image, mask in dataset]
    assert isinstance(asked["decoders"]["image"], tfds.decode.SkipDecoding)
    assert len(elements) == 2
    for (image, mask), photo, trimap in zip(elements, photos, trimaps, strict=True):
        np.testing.assert_array_equal(image, decode_resized(photo, SIZE)[0])
        np.testing.assert_array_equal(mask, np.full((SIZE, SIZE, 1), trimap.flat[0] - 1))


def test_tfds_offline_is_one_clear_line(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(tfds_source.socket, "create_connection", refuse)
    with pytest.raises(data.DataSourceError) as raised:
        data.tfds_dataset("train", SIZE, data_dir=str(tmp_path))
    message = str(raised.value)
    assert "\n" not in message and "--data-dir" in message and "synthetic" in message


def test_every_source_yields_the_same_element_spec(small_oxford, tmp_path, tfds_reachable):
    _write_paired(tmp_path / "paired", extra_image=False, extra_mask=False)
    paired, _ = data.paired_dataset(
        str(tmp_path / "paired" / "images"),
        str(tmp_path / "paired" / "masks"),
        SIZE,
        {0: 1, 255: 0},
    )
    sources = {
        "oxford": data.oxford_dataset(str(small_oxford), "trainval", SIZE),
        "paired": paired,
        "synthetic": data.synthetic_dataset(2, SIZE),
    }
    with tfds.testing.mock_data(num_examples=1):
        sources["tfds"] = data.tfds_dataset("test", SIZE)
        for name, dataset in sources.items():
            assert _strip_names(dataset.element_spec) == ELEMENT_SPEC, name
            image, mask = next(iter(dataset))
            assert image.dtype == tf.uint8 and mask.shape == (SIZE, SIZE, 1), name


def _striped_pair():
    """An image whose red channel encodes its mask, so misalignment is visible."""
    mask = np.zeros((SIZE, SIZE, 1), np.uint8)
    mask[:, : SIZE // 4] = 2
    mask[SIZE // 2 :, SIZE // 2 :] = 1
    image = np.repeat(mask * 100, 3, axis=-1).astype(np.uint8)
    return tf.constant(image), tf.constant(mask)


def test_paired_flip_keeps_image_and_mask_aligned():
    image, mask = _striped_pair()
    tf.random.set_seed(1)
    config = data.AugmentConfig(flip=True)
    flipped = 0
    for _ in range(20):
        out_image, out_mask = data.augment_pair(image, mask, config)
        np.testing.assert_array_equal(
            np.round(out_image.numpy()[..., 0] / 100), out_mask.numpy()[..., 0]
        )
        flipped += int(out_mask.numpy()[0, -1, 0] == 2)
    assert 0 < flipped < 20  # both outcomes happened


def test_scale_crop_keeps_alignment_and_colour_jitter_spares_the_mask():
    image, mask = _striped_pair()
    tf.random.set_seed(2)
    config = data.AugmentConfig(flip=True, min_crop_scale=0.6, colour_jitter=0.3)
    for _ in range(10):
        out_image, out_mask = data.augment_pair(image, mask, config)
        assert out_image.shape == (SIZE, SIZE, 3) and out_mask.dtype == tf.uint8
        assert set(np.unique(out_mask.numpy())) <= {0, 1, 2}
        # Jitter shifts brightness, but the class regions stay ordered in red.
        red = out_image.numpy()[..., 0]
        labels = out_mask.numpy()[..., 0]
        means = [red[labels == c].mean() for c in (0, 1, 2) if (labels == c).any()]
        assert means == sorted(means)


def test_train_batches_shape_and_class_weights():
    batches = data.train_batches(data.synthetic_dataset(6, SIZE), 4, class_weights=[1.0, 0.5, 3.0])
    images_batch, masks, weights = next(iter(batches))
    assert images_batch.shape == (4, SIZE, SIZE, 3) and images_batch.dtype == tf.float32
    expected = np.array([1.0, 0.5, 3.0], np.float32)[masks.numpy()[..., 0]]
    np.testing.assert_array_equal(weights.numpy(), expected)


def test_eval_batches_cover_the_whole_split():
    batches = data.eval_batches(data.synthetic_dataset(7, SIZE), 3)
    assert sum(int(images_batch.shape[0]) for images_batch, _ in batches) == 7
