# deepseek-search: one image for the query service (`dss serve`) and the consumer (`dss consume`).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 DSS_DATA_DIR=/data
WORKDIR /app

# torch first and pinned (the CPU build for this platform; use a CUDA base image for GPUs).
RUN pip install torch==2.13.0

COPY pyproject.toml README.md ./
COPY search ./search
COPY indexer ./indexer
COPY streaming ./streaming
COPY api ./api
COPY configs ./configs
COPY samples ./samples
# Editable, so configs/default.yaml next to the code is the default configuration.
RUN pip install -e .
# The ONNX query models of `encoder.runtime: auto` (the CPU's int8 query path), made once into
# the image instead of at every container start.
RUN python -c "from search.config import EncoderSettings; from search.encoders import load_encoder; load_encoder(EncoderSettings(device='cpu'))"

VOLUME /data
EXPOSE 8000
CMD ["dss", "serve", "--host", "0.0.0.0", "--port", "8000"]
