# Serving image: the REST service and the published ONNX models. No torch, no training code.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FACEVERIFY_HOST=0.0.0.0 \
    FACEVERIFY_PORT=8000 \
    FACEVERIFY_GALLERY_URL=sqlite:////data/gallery.db \
    FACEVERIFY_WORKERS=2 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/faceverify-metrics

WORKDIR /app
COPY pyproject.toml README.md ./
COPY model_store ./model_store
COPY faces ./faces
COPY service ./service
COPY faceverify ./faceverify
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app faceverify \
    && mkdir -p /data && chown faceverify /data

USER faceverify
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
# gunicorn with uvicorn workers; workers, threads per worker and the metrics directory come from the
# environment (see service/gunicorn_conf.py). Same as `faceverify serve --workers $FACEVERIFY_WORKERS`.
CMD ["gunicorn", "-c", "python:service.gunicorn_conf", "service.main:create_app()"]
