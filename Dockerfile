# syntax=docker/dockerfile:1
# LLM Budget Guard: one image, both commands (`budget-guard operator`, `budget-guard
# webhook`). docs/install.md says why this base image and how to build and push it;
# tests/integration/test_wheel_install.py proves what the image relies on (the wheel,
# its package data, both commands run offline from a prepared TIKTOKEN_CACHE_DIR).
#
#   docker build -t ghcr.io/your-org/llm-budget-guard:0.1.0 .

# The official CPython image, built with PGO and LTO (a plain source build is neither).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
# One virtual environment, copied whole into the final stage: the package and its
# dependencies at the versions pinned in constraints.txt, bytecode compiled by pip.
RUN python -m venv /opt/budget-guard \
 && /opt/budget-guard/bin/pip install --constraint constraints.txt . \
 && /opt/budget-guard/bin/pip uninstall --yes pip
# The tokenizer vocabularies the price table names (o200k_base, cl100k_base), downloaded
# now and checked by tiktoken against their SHA-256, so that pods never download at run
# time. The build fails if one cannot be loaded.
ENV TIKTOKEN_CACHE_DIR=/opt/budget-guard/tiktoken
RUN /opt/budget-guard/bin/python -c "import sys; \
from budget_guard.loaders.tokenizers import load_tokenizers; \
failures = load_tokenizers().failures; \
sys.exit(f'tokenizer vocabularies not loaded: {failures}' if failures else 0)"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="LLM Budget Guard" \
      org.opencontainers.image.description="Hard and soft spending limits for LLM APIs, enforced inline at the gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
# A non-root user with a fixed id: the Helm chart runs as 65532 with runAsNonRoot.
RUN groupadd --system --gid 65532 budget-guard \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin budget-guard
COPY --from=build /opt/budget-guard /opt/budget-guard
# Nothing is written at run time, so the root filesystem can be read-only: bytecode is
# compiled at build time, the vocabularies are baked in, and logs go to stderr.
ENV PATH=/opt/budget-guard/bin:${PATH} \
    TIKTOKEN_CACHE_DIR=/opt/budget-guard/tiktoken \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
# 8080 ext_authz checks and 8081 API (webhook); 9090 metrics and 8080 liveness (operator).
EXPOSE 8080 8081 9090
ENTRYPOINT ["budget-guard"]
CMD ["--help"]
