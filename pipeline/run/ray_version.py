"""The oldest Ray the jobs start or join: 2.52, the first with token auth (``RAY_AUTH_MODE=token``).

An older Ray does not know ``RAY_AUTH_MODE``: it starts a local Ray, or joins a cluster, without auth and
without a word, and whoever reaches its ports runs code (CVE-2023-48022). So a job checks the installed
Ray's version, from its package metadata and without importing it, before Ray starts, and refuses an older
one with one line.
"""

from __future__ import annotations

import re
from importlib import metadata

MIN_RAY = (2, 52)


class RayVersionError(RuntimeError):
    """The installed Ray has no token auth."""


def check_ray_version(version: str | None = None) -> str:
    """The installed Ray's version, where it has token auth.

    Args:
        version: the version to check (default: the installed ``ray`` distribution's).

    Raises:
        RayVersionError: Ray is older than 2.52, or not installed; one line, with the fix.
    """
    wanted = ".".join(map(str, MIN_RAY))
    fix = f"pip install 'ray[data,train,default]>={wanted}' (or: pip install -e '.[pipeline]')"
    if version is None:
        try:
            version = metadata.version("ray")
        except metadata.PackageNotFoundError:
            raise RayVersionError(f"Expected Ray {wanted} or newer, but got no Ray installed instead: {fix}.") from None
    release = re.match(r"(\d+)\.(\d+)", version)
    if release is None or tuple(map(int, release.groups())) < MIN_RAY:
        raise RayVersionError(
            f"Expected Ray {wanted} or newer (the first with token auth: an older Ray would run without it), but got "
            f"Ray {version} instead: {fix}."
        )
    return version
