# Waymark: a non-root image that runs `waymark serve`.
# Build:  docker build -t waymark .
# Run:    docker run -e WAYMARK_DATABASE_URL=postgresql+asyncpg://... -p 8000:8000 waymark
# Migrate (once per release, before the new version serves): docker run ... waymark migrate
# then load Waymark's terminology and pathway definitions:    docker run ... waymark seed
#
# The image installs the wheel, not the source tree: the wheel carries the migrations, the seed
# files and every other data file (setup.py, pyproject.toml), so the commands work from any
# directory. tests/test_packaging.py builds the wheel from exactly what this stage copies.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY app ./app
COPY migrations ./migrations
COPY seed ./seed
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/waymark \
 && /opt/waymark/bin/pip install /wheels/waymark-*.whl

FROM python:3.11-slim
RUN groupadd --system --gid 10001 waymark \
 && useradd --system --uid 10001 --gid waymark --home-dir /srv/waymark waymark
COPY --from=build /opt/waymark /opt/waymark
WORKDIR /srv/waymark
RUN mkdir -p var && chown waymark:waymark var
ENV PATH=/opt/waymark/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    WAYMARK_HOST=0.0.0.0 \
    WAYMARK_PORT=8000
USER waymark
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["waymark", "serve"]
