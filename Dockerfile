# syntax=docker/dockerfile:1.7
# One image for every SMVM service: `docker run IMAGE services.<name>` (ENTRYPOINT is `python -m`).
# Stages: build (venv + generated stubs) -> warm (numba compile cache) -> runtime (non-root, no build tools).
# Build with `make image`; CI lints this file with hadolint and our own policy rules (tests/k8s/test_dockerfile.py)
# because no Docker engine runs there.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:${PATH}
WORKDIR /app
RUN python -m venv /opt/venv
COPY requirements.txt pyproject.toml ./
RUN pip install --no-cache-dir -r requirements.txt
COPY protos/ protos/
COPY smvm/ smvm/
COPY services/ services/
COPY configs/ configs/
# The exec health probe the mTLS overlay uses (kubelet's grpc probe cannot present a client certificate).
COPY k8s/probe/ k8s/probe/
# Same command as `make proto`: Python stubs in smvm/v1 and the descriptor set Envoy's transcoder reads.
RUN rm -rf smvm/v1 && mkdir -p smvm/v1 build \
    && python -m grpc_tools.protoc -Iprotos \
       --python_out=. --pyi_out=. --grpc_python_out=. \
       --include_imports --descriptor_set_out=build/smvm_descriptor.pb \
       protos/smvm/v1/*.proto \
    && touch smvm/v1/__init__.py \
    && python -m compileall -q smvm services k8s/probe

FROM build AS warm
# The cache is compiled for x86-64-v3 (AVX2 + FMA: every x86 server CPU since 2013-2015); the kernel's
# exp and sums rely on FMA, and a `generic` build runs about 10x slower (docs/benchmarks.md). Build with
# NUMBA_CPU_NAME=generic only for nodes without AVX2; a host-specific name only if every node has it.
ARG NUMBA_CPU_NAME=x86-64-v3
ENV NUMBA_CPU_NAME=${NUMBA_CPU_NAME} \
    NUMBA_CACHE_DIR=/opt/smvm/numba-cache
RUN python -c "from services.simulation.engine import kernel; kernel.warmup()" \
    && test -n "$(find /opt/smvm/numba-cache -name '*.nbi')"

FROM ${PYTHON_IMAGE} AS runtime
ARG NUMBA_CPU_NAME=x86-64-v3
LABEL org.opencontainers.image.title="smvm" \
      org.opencontainers.image.description="Synthetic Market Validation Module services" \
      org.opencontainers.image.source="https://github.com/smvm/smvm"
RUN groupadd --system --gid 10001 smvm \
    && useradd --system --uid 10001 --gid smvm --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin smvm
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_CPU_NAME=${NUMBA_CPU_NAME} \
    SMVM_CONFIG_DIR=/app/configs \
    SMVM_NUMBA_CACHE_DIR=/opt/smvm/numba-cache \
    SMVM_RUNS_DIR=/var/lib/smvm/runs
COPY --from=build /opt/venv /opt/venv
# COPY keeps mtimes, so numba's cache index (keyed on the source file's stamp) stays valid.
COPY --from=warm /app /app
COPY --from=warm --chown=10001:10001 /opt/smvm/numba-cache /opt/smvm/numba-cache
WORKDIR /app
USER 10001:10001
EXPOSE 8080 50050 50051 50052 50053 50054 50055 50056 50058
# healthcheck: none in the image on purpose. One image runs nine services with different probes;
# Kubernetes probes each one (grpc health for the gRPC services, natively or, under mTLS, by
# k8s/probe/grpc_health_probe.py; /healthz and /readyz for the gateway).
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m"]
CMD ["services.gateway"]
