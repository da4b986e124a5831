# The conversion container: the project's package (`tritonfleet convert`, `tritonfleet build-repo`) with
# torch, transformers, onnx, onnxruntime, onnxscript and tokenizers. ENTRYPOINT: tritonfleet.
#
# Build context (scripts/build-images.sh prepares it in build/images/convert):
#   wheels/requirements.txt   the project's dependencies (pyproject.toml: dependencies + the "convert" extra)
#   wheels/*.whl              a wheelhouse downloaded on the host (empty in production)
#   project/                  pyproject.toml, README.md, src/
#   model_repository/         the Triton model repository templates (TRITONFLEET_TEMPLATE_DIR)
#
# Production (GPU hosts): the default BASE is NVIDIA's PyTorch image, which already carries CUDA torch; the venv
# sees it (--system-site-packages) and pip installs only what is missing, from the package index:
#   docker build -f docker/conversion.Dockerfile --build-arg PIP_OPTIONS= --build-arg TORCH_REQUIREMENT= CONTEXT
# Locally and in CI, scripts/build-images.sh overrides BASE with tritonfleet/debian12-base (Debian 12, Python 3.11)
# and installs offline from the wheelhouse, torch pinned to its CPU wheel.
#
# Layers: the dependencies (1.3 GB) come first and only change with wheels/; a change of the project's sources
# rebuilds only the last, small layers (the legacy builder's cache).
ARG BASE=nvcr.io/nvidia/pytorch:24.10-py3

FROM ${BASE} AS deps
# The legacy builder keeps build stages as untagged images (they are also its cache):
# `docker image prune --filter label=org.tritonfleet.stage=build` removes them.
LABEL org.tritonfleet.stage=build
# pip's source: the wheelhouse (offline) by default; empty in production to use the index.
ARG PIP_OPTIONS="--no-index --find-links /wheels"
# The torch to install: the local CPU wheel here; empty where the base image already has torch.
ARG TORCH_REQUIREMENT="torch==2.13.0"
COPY wheels /wheels
RUN python3 -m venv --system-site-packages /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_OPTIONS} \
       ${TORCH_REQUIREMENT} "setuptools>=77" wheel -r /wheels/requirements.txt \
    && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

FROM ${BASE}
COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    TRITONFLEET_TEMPLATE_DIR=/opt/tritonfleet/model_repository \
    HF_HUB_OFFLINE=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY project /opt/tritonfleet/src
RUN pip install --no-cache-dir --disable-pip-version-check --no-index --no-deps --no-build-isolation \
       /opt/tritonfleet/src \
    && rm -rf /opt/tritonfleet/src
COPY model_repository /opt/tritonfleet/model_repository
WORKDIR /work
ENTRYPOINT ["tritonfleet"]
CMD ["--help"]
