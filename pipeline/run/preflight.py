"""Checks on the driver, before Ray starts, that the run's storage can be reached as the spec says.

A typo in a path, a missing bucket, no credentials, a denied write or a wrong endpoint each become one
line that says what is wrong and how to fix it (:class:`StorageAccessError`, exit 2 in the jobs), instead
of a run that lists nothing and calls it success, or a botocore traceback from inside a Ray task.
"""

from __future__ import annotations

import secrets

from ..spec import RestoreSpec
from ..storage import StorageOptions, join_uri, split_protocol

CREDENTIALS_HELP = (
    "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where an instance or pod role "
    "gives them; a public bucket reads with storage.anon: true"
)


class StorageAccessError(Exception):
    """The spec's storage cannot be used as it stands; the message is one line a person can act on."""


def check_storage(spec: RestoreSpec, *, write: bool = True) -> None:
    """Raise :class:`StorageAccessError` unless the input can be listed (or the manifest read) and the output
    written. An input prefix that exists and holds no images is not an error (the run says so).

    Args:
        write: probe the output with a write (a run); False: only list it (a dry run, which writes nothing
            under the output: a bucket that is missing or may not be listed is seen, a denied write is not).
    """
    options = spec.storage.options()
    if spec.input.manifest:
        _check("input.manifest", spec.input.manifest, options, _read_one)
    else:
        _check("input.uri", spec.input.uri, options, _list_one)
    _check("output.uri", spec.output.uri, options, _write_and_delete if write else _list_output)


def _check(key: str, uri: str, options: StorageOptions, probe) -> None:
    try:
        probe(uri, options)
    except StorageAccessError as err:
        raise StorageAccessError(f"{key}: {err}") from None
    except Exception as exc:  # every store's own error types: named below where they are known
        raise StorageAccessError(f"{key}: {explain(exc, uri, options)}") from exc


def _filesystem(uri: str, options: StorageOptions):
    """``uri``'s filesystem as the run's, but trying a request twice, not ten times with backoff: an
    endpoint that cannot be reached is said in a second, not after a minute of retries."""
    import fsspec

    protocol, path = split_protocol(uri)
    kwargs = options.fsspec_kwargs(protocol)
    if protocol in ("s3", "s3a"):
        kwargs["config_kwargs"] = {**kwargs["config_kwargs"], "retries": {"max_attempts": 2, "mode": "standard"}}
        kwargs["skip_instance_cache"] = True
    fs = fsspec.filesystem(protocol, **kwargs)
    if hasattr(fs, "retries"):
        fs.retries = 1  # s3fs's own retries, around botocore's
    return fs, path


def _list_one(uri: str, options: StorageOptions) -> None:
    """One object or none under ``uri``: enough to know the place exists and may be listed."""
    protocol, path = split_protocol(uri)
    fs, _ = _filesystem(uri, options)
    if protocol in ("s3", "s3a"):
        bucket, _, prefix = path.partition("/")
        fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1)
    elif not fs.exists(path):
        raise StorageAccessError(f"{uri} does not exist")


def _list_output(uri: str, options: StorageOptions) -> None:
    """One object or none under the output: its bucket exists and may be listed (a local output that does
    not exist yet is made by the run)."""
    protocol, path = split_protocol(uri)
    if protocol in ("s3", "s3a"):
        fs, _ = _filesystem(uri, options)
        bucket, _, prefix = path.partition("/")
        fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1)


def _read_one(uri: str, options: StorageOptions) -> None:
    fs, path = _filesystem(uri, options)
    fs.info(path)


def _write_and_delete(uri: str, options: StorageOptions) -> None:
    """Write a small object under the output prefix and delete it: a denied write shows now, not once
    every image has been restored."""
    probe = join_uri(uri, f".write-check-{secrets.token_hex(4)}")
    protocol, _ = split_protocol(probe)
    fs, path = _filesystem(probe, options)
    if protocol == "file":
        fs.makedirs(fs._parent(path), exist_ok=True)
    fs.pipe_file(path, b"")
    try:
        fs.rm_file(path)
    except Exception:  # a store that lets us write but not delete still takes the run's outputs
        pass


def explain(exc: BaseException, uri: str, options: StorageOptions) -> str:
    """One line for an error from reaching ``uri``."""
    name = type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else name
    code = _error_code(exc)
    bucket = split_protocol(uri)[1].partition("/")[0]
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return f"no credentials for {uri} ({text}): {CREDENTIALS_HELP}"
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
        return f"the credentials for {uri} were refused ({code}): {CREDENTIALS_HELP}"
    if code == "NoSuchBucket" or (isinstance(exc, FileNotFoundError) and "bucket" in text.lower()):
        return f"bucket {bucket!r} does not exist (or is not visible to these credentials)"
    if isinstance(exc, FileNotFoundError):
        return f"{uri} does not exist"
    if isinstance(exc, PermissionError) or code in ("AccessDenied", "AllAccessDisabled", "403"):
        return f"access denied to {uri} ({text}); check the credentials' permissions on this bucket and prefix"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ClientConnectorError"):
        endpoint = options.fsspec_kwargs(split_protocol(uri)[0]).get("endpoint_url", "the default endpoint")
        return f"cannot reach the store at {endpoint} ({text}): check storage.endpoint_url and the network"
    return f"cannot use {uri}: {name}: {text}"


def _error_code(exc: BaseException) -> str:
    """The store's error code (``NoSuchBucket``, ``AccessDenied``, ...) of ``exc`` or of what caused it."""
    for e in (exc, exc.__cause__, exc.__context__):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
    return ""
