# syntax=docker/dockerfile:1
# A small image of ingest: build a wheel in one stage, install it into a slim runtime as a non-root user.
#   docker build -t ingest .
#   docker run --rm -e FAL_KEY -v "$PWD:/data" ingest run /data/media.csv --results /data/media.results.jsonl
#   docker run --rm ingest demo --dir /tmp/demo          # the demo on the embedded fake server, no key needed

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ingest ./ingest
RUN pip install --no-cache-dir --upgrade pip==25.3 build==1.3.0 \
 && python -m build --wheel --outdir /wheels

FROM python:3.12-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 --user-group ingest
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001:10001
WORKDIR /home/ingest
ENTRYPOINT ["ingest"]
CMD ["--help"]
