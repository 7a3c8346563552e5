# One image for every role of a wdgrid cluster: the controller (uvicorn), the Ray head and the Ray workers run it
# with different commands (docker-compose.yml). CUDA comes with the torch wheel; on a machine without a GPU the
# same image trains on the CPU.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WDGRID_DATA_DIR=/data \
    WDGRID_TUNE_DIR=/shared/tune

# git: the provenance of every result names the commit it was trained with (or set WDGRID_GIT_SHA at build time).
# g++: the fused CPU kernels (workers/fused.py) compile for the CPU they run on.
RUN apt-get update && apt-get install -y --no-install-recommends git curl g++ && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first, so that a code change does not re-install torch.
COPY pyproject.toml constraints.txt README.md ./
RUN mkdir -p sweeps workers results service && touch sweeps/__init__.py workers/__init__.py results/__init__.py \
        service/__init__.py \
    && pip install --no-cache-dir -c constraints.txt . \
    && pip uninstall -y wdgrid
COPY sweeps sweeps
COPY workers workers
COPY results results
COPY service service
ARG WDGRID_GIT_SHA=""
ENV WDGRID_GIT_SHA=${WDGRID_GIT_SHA}
RUN pip install --no-cache-dir --no-deps -c constraints.txt .
# The fused CPU kernels, built now for the building machine's CPU; a container on another kind of CPU builds its own
# on first use (~30 s), into the same folder.
ENV TORCH_EXTENSIONS_DIR=/opt/torch_extensions
RUN python -m workers.fused

# Your plugins: every role of the cluster (controller, head, workers) needs the packages that register the models and
# data sets your specs name. Copy or pip-install them here, e.g. the example package:
COPY examples examples
RUN pip install --no-cache-dir --no-deps ./examples/wdgrid-examples

RUN useradd --create-home --uid 1000 wdgrid && mkdir -p /data /shared && chown wdgrid /data /shared \
    && chown -R wdgrid /opt/torch_extensions
USER wdgrid
EXPOSE 8000 6380
CMD ["wdgrid", "serve"]
