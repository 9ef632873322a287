# A runner image for pipelines: `docker build -t provisioner .`, then
#   docker run --rm -v "$PWD:/work" -e PROVISIONER_STATE -e PGPASSWORD provisioner plan playbook.yaml
# The tool runs as an unprivileged user; the playbook folder is mounted at /work.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md CHANGELOG.md ./
COPY provisioner ./provisioner
RUN pip install . && rm -rf /src

RUN useradd --create-home --uid 10001 --user-group provisioner \
    && mkdir /work && chown provisioner:provisioner /work
USER provisioner
WORKDIR /work
ENV PROVISIONER_STATE_DIR=/work/.provisioner

ENTRYPOINT ["provisioner"]
CMD ["--help"]
