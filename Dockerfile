# One image for the head and every worker. Base: Ray's own GPU image at the Ray version pinned in
# pyproject.toml (the old ray-ml images are discontinued), Python 3.11, CUDA runtime included.
#   docker build -t rayspine:0.1.0 .        (push it where the cluster can pull it; see cluster.yaml)
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}

# CUDA build of PyTorch from the PyTorch index (the CPU build on PyPI would leave the GPUs idle).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128

# The base image runs as the unprivileged user `ray`; the package is installed for that user.
WORKDIR /home/ray/rayspine
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users rayspine ./rayspine
COPY --chown=ray:users jobs ./jobs
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}" \
 && pip install --no-cache-dir . \
 && rayspine --help >/dev/null

USER ray
ENV PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
CMD ["rayspine", "--help"]
