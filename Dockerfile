# The lab as an image: CPU by default, the nano lifecycle built in, served on 0.0.0.0:7860 by a non-root user.
#
#   docker build -t llm-lab .
#   docker run --init -p 7860:7860 -v lab-checkpoints:/data/checkpoints llm-lab   # --init: a PID 1 that reaps finished jobs
#
# On a GPU: a CUDA base and torch build, e.g.
#   docker build -t llm-lab:cuda --build-arg BASE=nvidia/cuda:12.8.1-runtime-ubuntu24.04 \
#       --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#   docker run --init --gpus all -p 7860:7860 -v lab-checkpoints:/data/checkpoints llm-lab:cuda
#
# Offline builds: wheels put in ./wheels/ (e.g. `pip download --dest wheels torch==2.13.0 --no-deps`, or every
# dependency with `pip download --dest wheels .`) are used first; with --build-arg PIP_NO_INDEX=1 only they are.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
LABEL llm-lab=build
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG PIP_NO_INDEX=
ENV PIP_NO_INDEX=${PIP_NO_INDEX} PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN command -v python3 >/dev/null && python3 -m venv --help >/dev/null \
    || (apt-get update && apt-get install -y --no-install-recommends python3 python3-venv && rm -rf /var/lib/apt/lists/*)
COPY pyproject.toml wheel[s] /wheels/
# torch first, from its own index (a plain `torch` requirement would pull the multi-GB CUDA build on a CPU image)
RUN python3 -m venv /opt/lab \
    && /opt/lab/bin/pip install --find-links /wheels --extra-index-url "${TORCH_INDEX}" "${TORCH_SPEC}"
COPY pyproject.toml README.md /src/
COPY lab /src/lab
COPY pages /src/pages
RUN /opt/lab/bin/pip install --find-links /wheels /src

FROM ${BASE}
LABEL llm-lab=image
RUN command -v python3 >/dev/null \
    || (apt-get update && apt-get install -y --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*)
COPY --from=build /opt/lab /opt/lab
RUN useradd --create-home --uid 1000 lab && mkdir -p /data/checkpoints && chown -R lab /data
ENV PATH=/opt/lab/bin:$PATH LAB_CHECKPOINTS=/data/checkpoints GRADIO_ANALYTICS_ENABLED=False PYTHONUNBUFFERED=1
USER lab
WORKDIR /home/lab
# the nano lifecycle (base → instruct → aligned), so the image opens ready to compare
RUN llm-lab seed && rm -rf /tmp/* /home/lab/.cache
VOLUME /data/checkpoints
EXPOSE 7860
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/config', timeout=4)"
CMD ["llm-lab", "app", "--host", "0.0.0.0", "--port", "7860"]
