# A CPU Triton Inference Server for the local fleet and CI: the real tritonserver 2.51.0 binary and python
# backend from the PyPI wheel nvidia-pytriton==0.7.0, laid out like NVIDIA's image (/opt/tritonserver).
# Production GPU hosts run nvcr.io/nvidia/tritonserver:<yy.mm>-py3 instead (the triton_server role's default).
# Built by scripts/build-images.sh, which prepares the context: tritonserver/ (unpacked from the wheel) and
# wheels/ (a wheelhouse downloaded on the host: no network access is needed inside the build).
ARG BASE=tritonfleet/debian12-base:latest

FROM ${BASE} AS python-deps
# The legacy builder keeps build stages as untagged images: build-images.sh prunes them by this label.
LABEL org.tritonfleet.stage=build-tritonserver
COPY wheels /wheels
COPY tritonserver-cpu.requirements.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels --disable-pip-version-check \
       -r /tmp/requirements.txt \
    && cd /opt/venv/lib/python3.11/site-packages \
    && rm -rf pip pip-*.dist-info setuptools setuptools-*.dist-info pkg_resources _distutils_hack \
       distutils-precedence.pth

FROM ${BASE}
# Into the system Python's own site directory: the python backend starts its stub (which embeds the system
# Python 3.11, libpython3.11) with an environment of its own, so PYTHONPATH does not reach the models.
COPY --from=python-deps /opt/venv/lib/python3.11/site-packages /usr/local/lib/python3.11/dist-packages
COPY tritonserver /opt/tritonserver
ENV PATH=/opt/tritonserver/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LD_LIBRARY_PATH=/opt/tritonserver/lib \
    PYTHONDONTWRITEBYTECODE=1
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/triton --shell /usr/sbin/nologin triton \
    && mkdir -p /models && chown triton:triton /models
USER triton
WORKDIR /home/triton
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver"]
CMD ["--model-repository=/models"]
