# Beam SDK worker image for the segmentation job: Beam's Python 3.11 SDK
# harness with TensorFlow and petseg installed, at the versions the project is
# tested with (constraints.txt). Workers then import petseg without
# --setup_file and start in seconds instead of installing TensorFlow each.
#
# CPU workers (Dataflow, Flink):
#   docker build -t REGISTRY/petseg-beam-worker:0.1.0 .
#
# GPU workers: the same Beam image, with TensorFlow's CUDA libraries from pip
# (the NVIDIA driver comes from the host, e.g. Dataflow's install-nvidia-driver):
#   docker build --build-arg TENSORFLOW_PACKAGE="tensorflow[and-cuda]" \
#     -t REGISTRY/petseg-beam-worker:0.1.0-gpu .
#
# The serving runtimes of --backend are petseg extras (default: openvino, which
# --backend auto prefers on CPUs); name others, or none, with PETSEG_EXTRAS:
#   docker build --build-arg PETSEG_EXTRAS=openvino,onnx -t ... .
#
# The SDK version must equal the submitting machine's apache-beam (2.62.0).
# Keep Beam's entrypoint (/opt/apache/beam/boot): the runner starts it.
# See docs/segment.md for the submit commands.

ARG BEAM_SDK_IMAGE=apache/beam_python3.11_sdk:2.62.0
FROM ${BEAM_SDK_IMAGE}

ARG TENSORFLOW_PACKAGE=tensorflow
ARG PETSEG_EXTRAS=openvino

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/petseg

# Dependencies first, in their own layer: it changes only with constraints.txt.
COPY constraints.txt ./
RUN pip install -c constraints.txt "${TENSORFLOW_PACKAGE}" pillow numpy

COPY . ./
RUN pip install -c constraints.txt ".[${PETSEG_EXTRAS}]" \
    && python -c "import petseg.cli.segment, tensorflow"
