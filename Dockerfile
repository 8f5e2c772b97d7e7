# The image that k8s/rayjob.yaml and k8s/raycronjob.yaml run: Ray's own GPU image of the Ray version the
# manifests name (rayVersion), with this project installed. Python 3.11 is named: the plain -gpu tag
# carries Python 3.9 (per Ray's image documentation), older than this project needs (3.10 or newer).
#   docker build -t ghcr.io/my-org/dgunet-restore:0.1.0 .
#   docker push ghcr.io/my-org/dgunet-restore:0.1.0
# The base is named by tag: pin it by digest where you build (a tag can be moved; a digest cannot):
#   docker pull rayproject/ray:2.60.0-py311-gpu
#   docker inspect --format '{{index .RepoDigests 0}}' rayproject/ray:2.60.0-py311-gpu
# then FROM rayproject/ray:2.60.0-py311-gpu@sha256:<that digest>. The repository holds no digest because none
# could be checked where it was written, and an unchecked one would fail every build or pin the wrong image.
FROM rayproject/ray:2.60.0-py311-gpu

# Ray's images run as the user `ray` (its Python is the user's conda); the project lives in /app, the
# manifests' workingDir, owned by `ray` so that pip can build it in place.
USER root
RUN mkdir -p /app && chown ray:users /app
USER ray
WORKDIR /app
COPY --chown=ray:users pyproject.toml README.md constraints.txt ./
COPY --chown=ray:users dgunet ./dgunet
COPY --chown=ray:users pipeline ./pipeline
COPY --chown=ray:users jobs ./jobs
# Every version pinned by constraints.txt (what the tests passed with); torch from PyPI is the CUDA build on
# Linux; Ray is pinned to the image's own.
RUN pip install --no-cache-dir -c constraints.txt '.[pipeline]' \
    && python -c "import ray, torch, pipeline.run.job, dgunet; assert ray.__version__ == '2.60.0', ray.__version__"
