"""Original-resolution evaluation and the shared probability upsampling."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from petseg.classes import BACKGROUND, BORDER, PET
from petseg.cli.evaluate import main
from petseg.imageio import resize_mask
from petseg.serving.upsample import probabilities_to_mask, upsample_planes
from petseg.training.data.files import LabelledFile
from petseg.training.data.oxford import TRIMAP_TO_CLASS
from petseg.training.data.synthetic import synthetic_example
from petseg.training.evaluate import default_output, evaluate_examples, evaluate_export

# Original sizes differ from the model's and from each other, as real photos do.
SIZES = ((48, 80), (96, 64), (40, 40))


def write_oxford_folder(root, sizes=SIZES, split="test"):
    """An Oxford-layout folder of synthetic pets with their trimaps (class + 1)."""
    os.makedirs(root / "images")
    os.makedirs(root / "annotations" / "trimaps")
    names = []
    for index, (height, width) in enumerate(sizes):
        image, mask = synthetic_example(index, max(height, width), seed=3)
        name = f"pet_{index}"
        Image.fromarray(image[:height, :width]).save(root / "images" / f"{name}.jpg", quality=95)
        Image.fromarray(mask[:height, :width, 0] + 1).save(
            root / "annotations" / "trimaps" / f"{name}.png"
        )
        names.append(name)
    (root / "annotations" / f"{split}.txt").write_text("".join(f"{name} 1 1 1\n" for name in names))
    return root


def test_upsampled_class_planes_keep_a_distribution_and_the_size():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 8, 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    up = upsample_planes(probabilities, (30, 17))  # one plane per class
    assert up.shape == (3, 30, 17) and up.dtype == np.float32
    np.testing.assert_allclose(up.sum(0), 1.0, atol=1e-5)
    assert up.min() >= probabilities.min() - 1e-6 and up.max() <= probabilities.max() + 1e-6
    batch = upsample_planes(probabilities[None], (30, 17))
    np.testing.assert_allclose(batch[0], up)


def test_upsampling_probabilities_places_the_boundary_between_model_pixels():
    """A 2-pixel model output upsampled 8x: the class switches where scores cross.

    Argmax first and nearest-neighbour upsampling would switch at the model
    pixel edge (column 8); interpolated probabilities switch where the
    scores cross, one column later (column 9), as the scores say.
    """
    probabilities = np.array([[[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]]], np.float32)  # [1, 2, 3]
    mask = probabilities_to_mask(probabilities, (1, 16))
    assert mask.dtype == np.uint8 and mask.shape == (1, 16)
    # Half-pixel centres: column x samples 0.125 * x - 0.4375 between the two model pixels;
    # pet wins while 0.9 - 0.7 t > 0.1 + 0.7 t, i.e. t < 4 / 7: up to column 8 (t = 0.5625).
    assert mask[0].tolist() == [PET] * 9 + [BACKGROUND] * 7
    nearest = resize_mask(probabilities.argmax(-1).astype(np.uint8), (1, 16))
    assert nearest[0].tolist() == [PET] * 8 + [BACKGROUND] * 8


def test_probabilities_to_mask_without_size_is_argmax():
    probabilities = np.zeros((4, 4, 3), np.float32)
    probabilities[..., BORDER] = 1.0
    assert (probabilities_to_mask(probabilities) == BORDER).all()
    with pytest.raises(ValueError, match="positive"):
        upsample_planes(probabilities, (0, 3))


def oracle_predictor(examples, image_size):
    """Returns one-hot probabilities of each true mask at model size, in call order."""
    from petseg.training.data.files import lookup_table, read_pair

    table = lookup_table(TRIMAP_TO_CLASS)
    masks = [resize_mask(read_pair(ex, table)[1][..., 0], image_size) for ex in examples]
    calls = iter(range(len(masks)))

    def predict(images):
        assert images.dtype == np.uint8 and images.shape[1:] == (image_size, image_size, 3)
        return np.stack([np.eye(3, dtype=np.float32)[masks[next(calls)]] for _ in images])

    return predict


def test_evaluate_examples_compares_at_original_resolution(tmp_path):
    root = write_oxford_folder(tmp_path / "pets")
    examples = [
        LabelledFile(
            str(root / "images" / f"pet_{i}.jpg"),
            str(root / "annotations" / "trimaps" / f"pet_{i}.png"),
        )
        for i in range(len(SIZES))
    ]
    total = sum(h * w for h, w in SIZES)

    def all_background(images):
        probabilities = np.zeros(images.shape[:3] + (3,), np.float32)
        probabilities[..., BACKGROUND] = 1.0
        return probabilities

    matrix, skipped = evaluate_examples(all_background, examples, 32, TRIMAP_TO_CLASS)
    assert skipped == [] and matrix.sum() == total
    assert matrix[:, [PET, BORDER]].sum() == 0  # every pixel predicted background

    oracle, _ = evaluate_examples(oracle_predictor(examples, 32), examples, 32, TRIMAP_TO_CLASS)
    assert oracle.sum() == total
    # A perfect model-size answer, upsampled, is nearly perfect at full size.
    assert np.trace(oracle) / total > 0.9


def test_evaluate_examples_skips_unreadable_pairs(tmp_path):
    root = write_oxford_folder(tmp_path / "pets")
    (root / "images" / "pet_1.jpg").write_bytes(b"not an image")
    examples = [
        LabelledFile(
            str(root / "images" / f"pet_{i}.jpg"),
            str(root / "annotations" / "trimaps" / f"pet_{i}.png"),
        )
        for i in range(len(SIZES))
    ]
    matrix, skipped = evaluate_examples(
        lambda images: np.full(images.shape[:3] + (3,), 1 / 3, np.float32),
        examples,
        32,
        TRIMAP_TO_CLASS,
    )
    assert [path for path, _ in skipped] == [examples[1].image_path]
    assert matrix.sum() == SIZES[0][0] * SIZES[0][1] + SIZES[2][0] * SIZES[2][1]


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    from petseg.training.export import export_model
    from petseg.training.model import build_unet

    model = build_unet(32, 3, alpha=0.35, encoder_weights=None)
    export_dir = str(tmp_path_factory.mktemp("run") / "export")
    export_model(
        model, export_dir, {"class_names": ["pet", "background", "border"], "model_id": "tiny"}
    )
    return export_dir


def test_evaluate_export_scores_a_saved_model(tmp_path, tiny_export):
    root = write_oxford_folder(tmp_path / "pets")
    report = evaluate_export(tiny_export, str(root), "test")
    assert report["images"] == len(SIZES) and report["split"] == "test"
    assert report["resolution"] == "original" and report["model_id"] == "tiny"
    assert report["pixels"] == sum(h * w for h, w in SIZES)
    assert 0.0 <= report["pixel_accuracy"] <= 1.0 and 0.0 <= report["mean_iou"] <= 1.0
    assert np.array(report["confusion_matrix"]).sum() == report["pixels"]


def test_evaluate_cli_writes_the_report_beside_the_export(tmp_path, tiny_export, capsys):
    root = write_oxford_folder(tmp_path / "pets")
    assert main(["--model", tiny_export, "--data-dir", str(root), "--split", "test"]) == 0
    path = default_output(tiny_export, "test")
    assert path == os.path.join(os.path.dirname(tiny_export), "eval_test.json")
    with open(path) as file:
        report = json.load(file)
    assert set(report["iou"]) == {"pet", "background", "border"}
    assert "mean IoU" in capsys.readouterr().out


def test_evaluate_cli_reports_missing_data_in_one_line(tmp_path, tiny_export, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["--model", tiny_export, "--data-dir", str(tmp_path / "nowhere")],
            prog="train.py evaluate",
        )
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        error.startswith("train.py evaluate: error:") and "not an Oxford-IIIT Pet folder" in error
    )


def test_mask_and_confidence_equal_numpy_argmax_and_max_ties_included():
    from petseg.serving.upsample import mask_and_confidence

    rng = np.random.default_rng(5)
    probabilities = rng.random((2, 7, 9, 3)).astype(np.float32)
    probabilities[0, 0, 0] = [0.4, 0.4, 0.2]  # a tie goes to the lower index, as np.argmax
    probabilities[0, 0, 1] = [0.2, 0.4, 0.4]
    mask, confidence = mask_and_confidence(probabilities)
    np.testing.assert_array_equal(mask, np.argmax(probabilities, axis=-1))
    np.testing.assert_array_equal(confidence, np.max(probabilities, axis=-1))
    assert mask.dtype == np.uint8 and (mask[0, 0, 0], mask[0, 0, 1]) == (0, 1)


@pytest.mark.parametrize("classes", [1, 2, 4])
def test_mask_and_confidence_of_planes_for_any_number_of_classes(classes):
    from petseg.serving.upsample import mask_and_confidence_of_planes

    planes = np.random.default_rng(classes).random((classes, 5, 6)).astype(np.float32)
    planes[:, 0, 0] = 0.5  # every class tied: the lowest index wins
    mask, confidence = mask_and_confidence_of_planes(planes)
    np.testing.assert_array_equal(mask, np.argmax(planes, axis=0))
    np.testing.assert_array_equal(confidence, np.max(planes, axis=0))
    assert mask.dtype == np.uint8 and mask[0, 0] == 0
