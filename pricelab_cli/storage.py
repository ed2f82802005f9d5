"""Object storage (``s3://`` URIs): connection options, access checks, listing, get and put.

Datasets are read by polars' native cloud reader with ``storage_options=storage_options(...)``;
listing, single objects (a design JSON, a small CSV) and writes go through
``pyarrow.fs.S3FileSystem``. Neither needs boto3. Any S3-compatible store works: the
endpoint, region and keys come from the standard AWS environment variables, and
``--storage-option KEY=VALUE`` pairs override them.

What was found against a real S3-compatible server (moto) with polars 2.1 and pyarrow 26:

- polars takes object_store's keys, case-insensitive, aliases accepted: ``aws_endpoint_url``
  (also ``aws_endpoint``, ``endpoint_url``), ``aws_region`` (``region``),
  ``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``, ``aws_allow_http``
  (polars allows plain http by itself for an ``http://`` endpoint; an explicit ``false``
  refuses it), ``aws_skip_signature``; the client keys ``timeout`` and ``connect_timeout``
  (durations such as ``"5s"``, ``"500ms"``); and polars' own ``max_retries``,
  ``retry_timeout_ms``, ... which must be ints (the string ``"2"`` is rejected). Unknown
  keys are ignored silently. polars also reads the AWS_* variables itself; the options are
  still spelled out so that polars and pyarrow see the same settings and a
  ``--storage-option`` wins.
- Failures: with polars' defaults (8 retries, no request timeout) a closed port fails after
  20 s, and an endpoint that accepts connections but never answers hangs (still waiting
  after 200 s). polars also rebuilds its client and runs a failed request once more, so
  every bound counts twice. pricelab's ``timeout`` is the whole wait for a store that stopped
  answering (default ``DEFAULT_TIMEOUT_S``, 30 s): polars gets half of it a request, with
  ``max_retries`` 0 (its own second attempt stays), ``retry_timeout_ms`` 10000 and
  ``connect_timeout`` 5s. A closed port fails in 0.5 s, a store that goes silent in the
  middle of a read in about ``timeout``. A request's body counts in its time (polars
  downloads in chunks): raise it (``--storage-option timeout=300s``) on a very slow link.
- pyarrow: ``connect_timeout`` applies; ``request_timeout`` is ignored on Linux, where the
  AWS SDK ends a request that receives nothing for 3 s; ``AwsStandardS3RetryStrategy``
  bounds the attempts (``max_retries`` + 1). pricelab asks again after such a "too slow"
  while the whole ``timeout`` leaves room for another 3 s (``_patiently``), so a busy store
  gets the wait the user gave. A closed port fails in under 1 s, a silent endpoint in about
  ``timeout``. ``check_access`` uses pyarrow, so an unreachable store is
  reported within seconds, before polars reads anything.
- Without any credentials both libraries' credential chains end at the instance-metadata
  service (a link-local address; not tried here), which off a cloud machine waits for a
  timeout. So a URI is refused at
  once when no credential source is configured (see ``_credential_source``). With keys, a
  region and an endpoint set, neither library connects anywhere but the endpoint.
- Writes: an S3 object becomes visible only when its upload completes, but pyarrow
  completes an unclosed upload when the stream is destroyed, which would publish a
  truncated object after a Ctrl-C; see ``_abandon`` for how that is prevented.

Exit codes: an unreachable store, missing or refused credentials, a missing bucket, object,
prefix content or glob match are input errors (66), for outputs as for inputs, because the
user fixes them in the same settings; a URI scheme other than ``s3://``, a malformed
``--storage-option`` and an output URI without an object name are usage errors (2); a write
that fails for any other reason is a general error (1).
"""

from __future__ import annotations

import atexit
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pricelab_cli.errors import InputFileError, PricelabError, UsageError
from pricelab_cli.paths import GLOB_CHARS, glob_regex, has_glob  # noqa: F401 - glob_regex is part of this module's interface

T = TypeVar("T")
SCHEMES = ("s3", "s3a")
_CHUNK = 8 << 20
# Upload streams that failed or were interrupted, kept unclosed until exit (see _abandon).
_ABANDONED_UPLOADS: list[Any] = []
# Bounds that make an unreachable store fail within seconds (see the module docstring).
DEFAULT_BOUNDS: dict[str, Any] = {
    "max_retries": 0,
    "retry_timeout_ms": 10_000,
    "connect_timeout": "5s",
}
# How long a store that stopped answering is waited for, in all (``--storage-option
# timeout=...`` sets it). polars tries a failed read twice (it rebuilds its client and asks
# again), so each request gets half of it.
DEFAULT_TIMEOUT_S = 30.0
# polars' own keys, which it wants as numbers; --storage-option gives text.
_NUMERIC_KEYS = frozenset(
    [
        "file_cache_ttl",
        "max_retries",
        "retry_timeout_ms",
        "retry_init_backoff_ms",
        "retry_max_backoff_ms",
        "retry_base_multiplier",
        "rate_read_init",
        "rate_read_floor",
        "rate_read_ceiling",
        "rate_write_init",
        "rate_write_floor",
        "rate_write_ceiling",
    ]
)
# One spelling per setting, so that an environment value and a --storage-option for the
# same setting cannot both reach the reader.
_ALIASES = {
    "aws_endpoint": "aws_endpoint_url",
    "endpoint": "aws_endpoint_url",
    "endpoint_url": "aws_endpoint_url",
    "aws_endpoint_url_s3": "aws_endpoint_url",
    "region": "aws_region",
    "aws_default_region": "aws_region",
    "access_key_id": "aws_access_key_id",
    "secret_access_key": "aws_secret_access_key",
    "session_token": "aws_session_token",
    "token": "aws_session_token",
    "aws_token": "aws_session_token",
    "allow_http": "aws_allow_http",
    "skip_signature": "aws_skip_signature",
    "virtual_hosted_style_request": "aws_virtual_hosted_style_request",
}
# Variables through which the AWS libraries find credentials without keys in the options.
_DELEGATED_CREDENTIAL_VARIABLES = (
    "AWS_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SET_ENDPOINT = "set AWS_ENDPOINT_URL to the store's address (or --storage-option aws_endpoint_url=URL)"
_SET_KEYS = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or --storage-option aws_access_key_id=... "
    "and --storage-option aws_secret_access_key=...)"
)


def is_remote(path: str) -> bool:
    """True for a URI with a scheme (``s3://bucket/key``); False for ``-`` and local paths.

    ``file://`` URIs count as local.
    """
    found = _URI.match(str(path))
    return bool(found) and found.group(1).lower() != "file"


def parse_storage_option(pair: str) -> tuple[str, str]:
    """``"KEY=VALUE"`` -> ``(key, value)``; a pair without ``=`` or key is a usage error (2)."""
    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--storage-option {pair!r}: expected KEY=VALUE, e.g. aws_region=eu-west-1.")
    return key.strip(), value


def storage_options(
    extra: Mapping[str, str] | Iterable[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Options to pass as polars' ``storage_options`` (and to the other functions here).

    Built from the standard AWS variables of ``environ`` (default ``os.environ``):
    AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3, AWS_REGION or AWS_DEFAULT_REGION,
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ALLOW_HTTP, then
    overridden by ``extra``: a mapping, or ``--storage-option`` pairs as ``"KEY=VALUE"``
    strings. Keys are lower-cased and aliases reduced to one spelling (``endpoint_url`` ->
    ``aws_endpoint_url``); polars' numeric keys (``max_retries``, ...) become numbers. Plain
    http is allowed when the endpoint is ``http://``, and retries and timeouts are bounded
    (``DEFAULT_BOUNDS``) unless given.
    """
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    from_env = {
        "aws_endpoint_url": env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
        "aws_region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        "aws_access_key_id": env.get("AWS_ACCESS_KEY_ID"),
        "aws_secret_access_key": env.get("AWS_SECRET_ACCESS_KEY"),
        "aws_session_token": env.get("AWS_SESSION_TOKEN"),
        "aws_allow_http": env.get("AWS_ALLOW_HTTP"),
    }
    options.update({key: value for key, value in from_env.items() if value})
    given = _normalised(extra)
    if "aws_access_key_id" in given and "aws_session_token" not in given:
        # A session token belongs to the environment's keys, not to keys given on the command line.
        options.pop("aws_session_token", None)
    options.update(given)
    endpoint = str(options.get("aws_endpoint_url", ""))
    if endpoint.lower().startswith("http://"):
        options.setdefault("aws_allow_http", "true")
    for key, value in DEFAULT_BOUNDS.items():
        options.setdefault(key, value)
    total = _duration_seconds(options.get("timeout", DEFAULT_TIMEOUT_S), DEFAULT_TIMEOUT_S)
    options["timeout"] = f"{max(1, int(total * 500))}ms"
    return options


def check_access(uri: str, options: Mapping[str, Any] | None = None) -> list[str]:
    """Verify, within seconds and before any data is read, that ``uri`` can be read.

    Returns the object URIs found (as ``list_objects``). Raises ``InputFileError`` (66)
    naming the URI when the store cannot be reached (and which variable sets its address),
    when no credentials are configured or they are refused (which variables set them), when
    the bucket does not exist, and when nothing is there: no such object, an empty prefix,
    or a glob that matches nothing.
    """
    options = _resolved(options)
    found = list_objects(uri, options)
    if found:
        return found
    bucket, key = _split(uri)
    if not _bucket_exists(uri, bucket, options):
        raise _missing_bucket(uri, bucket, options)
    if has_glob(key):
        raise InputFileError(f"{uri}: no object matches this pattern; check the prefix and the pattern.")
    if key and not key.endswith("/"):
        raise InputFileError(f"{uri}: no such object, and no objects under it as a prefix.")
    raise InputFileError(f"{uri}: no objects under this prefix; check the bucket and the prefix.")


def list_objects(uri: str, options: Mapping[str, Any] | None = None) -> list[str]:
    """The object URIs at ``uri``, sorted: the object itself, the objects under it as a
    prefix, or those matching it as a glob (``*`` and ``?`` within one path segment, ``**``
    across segments). A missing bucket is an ``InputFileError``; nothing found is ``[]``."""
    import pyarrow.fs as pafs

    options = _resolved(options)
    bucket, key = _split(uri)
    scheme = uri.split("://", 1)[0]
    s3 = _filesystem(uri, options)

    def keys_found() -> list[str]:
        if has_glob(key):
            root = key[: _first_glob(key)].rsplit("/", 1)[0] if "/" in key[: _first_glob(key)] else ""
            pattern = glob_regex(key)
            return [k for k in _keys_under(s3, bucket, root) if pattern.fullmatch(k)]
        info = s3.get_file_info(f"{bucket}/{key}".rstrip("/")) if key.strip("/") else None
        if info is not None and info.type == pafs.FileType.File:
            return [key]
        return _keys_under(s3, bucket, key.strip("/"))

    try:
        keys = _patiently(keys_found, options)
    except OSError as exc:
        raise cloud_error(uri, exc, options) from exc
    return sorted(f"{scheme}://{bucket}/{k}" for k in keys)


def get_object(uri: str, options: Mapping[str, Any] | None = None) -> bytes:
    """The bytes of one object (a design JSON, a small CSV); errors as in ``check_access``."""
    options = _resolved(options)
    bucket, key = _split(uri)
    s3 = _filesystem(uri, options)

    def read() -> bytes:
        with s3.open_input_stream(f"{bucket}/{key}") as stream:
            return stream.read()

    try:
        return _patiently(read, options)
    except FileNotFoundError as exc:
        if not _bucket_exists(uri, bucket, options):
            raise _missing_bucket(uri, bucket, options) from exc
        raise InputFileError(f"{uri}: no such object.") from exc
    except OSError as exc:
        raise cloud_error(uri, exc, options) from exc


def put_object(uri: str, data: bytes, options: Mapping[str, Any] | None = None) -> None:
    """Write ``data`` as the object ``uri``; the object appears only once it is complete.

    A run that fails or is interrupted leaves no object and no partial one, and an existing
    object is replaced whole or not at all (see ``_abandon``). Unreachable store, missing or
    refused credentials, missing bucket: ``InputFileError`` (66); anything else:
    ``PricelabError`` (1).
    """
    _upload(uri, options, [data])


def put_file(uri: str, path: str | Path, options: Mapping[str, Any] | None = None) -> None:
    """Upload the local file ``path`` as the object ``uri``, streamed (as ``put_object``)."""

    def chunks() -> Iterable[bytes]:
        with open(path, "rb") as source:
            while chunk := source.read(_CHUNK):
                yield chunk

    _upload(uri, options, chunks())


def check_output(uri: str, options: Mapping[str, Any] | None = None) -> None:
    """Before any computation: the store answers, credentials are set and the bucket exists.

    Raises ``InputFileError`` (66) like ``check_access`` (a missing bucket included). Write
    permission itself is only known at the put.
    """
    options = _resolved(options)
    bucket, _ = _split(uri)
    if not _bucket_exists(uri, bucket, options):
        raise _missing_bucket(uri, bucket, options)


def cloud_error(uri: str, exc: BaseException, options: Mapping[str, Any] | None = None) -> PricelabError:
    """A pricelab error for a failure of polars or pyarrow on ``uri`` (to ``raise ... from exc``).

    Unreachable store, refused credentials, missing bucket or object: ``InputFileError``
    (66) saying what to set; anything else: ``InputFileError`` with the library's first line.
    """
    text = str(exc)
    lowered = text.lower()
    endpoint = _endpoint_name(_resolved(options))
    if isinstance(exc, (ConnectionError, TimeoutError)) or any(
        marker in lowered
        for marker in (
            "network_connection",
            "curlcode",
            "error sending request",
            "connection refused",
            "timed out",
            "timeout was reached",
            "dns error",
            "could not resolve",
        )
    ):
        slow = ("timed out", "timeout was reached", "too slow")
        if isinstance(exc, TimeoutError) or any(marker in lowered for marker in slow):
            return InputFileError(
                f"{uri}: the object store at {endpoint} did not answer within the timeout; if it is slow rather than "
                f"absent, give it longer with --storage-option timeout=120s, else {_SET_ENDPOINT}."
            )
        if "refused" in lowered or "could not connect" in lowered:
            reason = "connection refused"
        else:
            reason = "no connection"
        return InputFileError(f"{uri}: cannot reach the object store at {endpoint} ({reason}); {_SET_ENDPOINT}.")
    if any(
        marker in lowered
        for marker in (
            "access_denied",
            "accessdenied",
            "invalid_access_key_id",
            "invalidaccesskeyid",
            "signature_does_not_match",
            "signaturedoesnotmatch",
            "expiredtoken",
            "expired_token",
            "403 forbidden",
        )
    ):
        return InputFileError(
            f"{uri}: the object store at {endpoint} refused access with these credentials; {_SET_KEYS}."
        )
    if "no_such_bucket" in lowered or "nosuchbucket" in lowered:
        bucket = uri.split("://", 1)[-1].split("/", 1)[0]
        return _missing_bucket(uri, bucket, _resolved(options))
    if isinstance(exc, FileNotFoundError) or "nosuchkey" in lowered or "expanded paths were empty" in lowered:
        return InputFileError(f"{uri}: no such object.")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return InputFileError(f"{uri}: cannot be read ({first[:300]}).")


# --------------------------------------------------------------------------- internals


def _resolved(options: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The options given, else those of the environment."""
    return storage_options() if options is None else options


def _normalised(extra: Mapping[str, str] | Iterable[str] | None) -> dict[str, Any]:
    if extra is None:
        return {}
    pairs = extra.items() if isinstance(extra, Mapping) else (parse_storage_option(p) for p in extra)
    options: dict[str, Any] = {}
    for raw_key, value in pairs:
        key = raw_key.strip().lower()
        key = _ALIASES.get(key, key)
        options[key] = _numeric(raw_key, value) if key in _NUMERIC_KEYS else value
    return options


def _numeric(key: str, value: Any) -> int | float:
    if isinstance(value, (int, float)):
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"--storage-option {key}={value}: {key} must be a number.") from None


def _split(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``; other schemes are a usage error."""
    found = _URI.match(uri)
    scheme = found.group(1).lower() if found else ""
    if scheme not in SCHEMES:
        raise UsageError(
            f"{uri}: pricelab reads object storage through s3:// URIs (Amazon S3 or any "
            "S3-compatible store, with AWS_ENDPOINT_URL); give an s3:// URI or a local path."
        )
    rest = uri[found.end() :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise UsageError(f"{uri}: no bucket; expected s3://BUCKET/KEY.")
    return bucket, key


def _first_glob(key: str) -> int:
    return min(key.index(ch) for ch in GLOB_CHARS if ch in key)


def _keys_under(s3: Any, bucket: str, prefix: str) -> list[str]:
    import pyarrow.fs as pafs

    base = f"{bucket}/{prefix}".rstrip("/")
    infos = s3.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    start = len(bucket) + 1
    return [info.path[start:] for info in infos if info.type == pafs.FileType.File]


# pyarrow's S3 client ends a request that receives nothing for this long ("too slow"); it
# cannot be set on Linux.
_PYARROW_SILENCE_S = 3.0


def _patiently(call: Callable[[], T], options: Mapping[str, Any]) -> T:
    """``call()``, a pyarrow read, asked again while pyarrow calls the store "too slow" and
    the whole wait (``timeout``, as polars gets it) leaves room for another attempt, so that
    a busy store is waited for as long as the user said and not pyarrow's fixed 3 s."""
    whole = 2 * _duration_seconds(options.get("timeout"), DEFAULT_TIMEOUT_S / 2)
    deadline = time.monotonic() + whole
    while True:
        try:
            return call()
        except OSError as exc:
            if "too slow" not in str(exc).lower() or time.monotonic() + _PYARROW_SILENCE_S > deadline:
                raise


def _bucket_exists(uri: str, bucket: str, options: Mapping[str, Any] | None) -> bool:
    import pyarrow.fs as pafs

    s3 = _filesystem(uri, options)
    try:
        return _patiently(lambda: s3.get_file_info(bucket).type != pafs.FileType.NotFound, options)
    except OSError as exc:
        raise cloud_error(uri, exc, options) from exc


def _missing_bucket(uri: str, bucket: str, options: Mapping[str, Any]) -> InputFileError:
    return InputFileError(f"{uri}: the bucket {bucket!r} does not exist at {_endpoint_name(options)}.")


def _endpoint_name(options: Mapping[str, Any] | None) -> str:
    endpoint = (options or {}).get("aws_endpoint_url")
    return str(endpoint) if endpoint else "the AWS default endpoint (AWS_ENDPOINT_URL is not set)"


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _credential_source(options: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    """How credentials will be found: "keys", "anonymous", "delegated", or None (none set).

    Keys come from the options (built from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY);
    ``aws_skip_signature=true`` reads a public bucket; a profile, web identity or container
    credentials variable, or an explicit ``aws_metadata_endpoint``, leaves the search to the
    AWS libraries.
    """
    if options.get("aws_access_key_id") and options.get("aws_secret_access_key"):
        return "keys"
    if _truthy(options.get("aws_skip_signature", "")):
        return "anonymous"
    if options.get("aws_metadata_endpoint") or any(environ.get(v) for v in _DELEGATED_CREDENTIAL_VARIABLES):
        return "delegated"
    return None


def _duration_seconds(value: Any, default: float) -> float:
    """``"5s"``, ``"500ms"``, ``"2m"`` or a number of seconds -> seconds."""
    found = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|sec|secs|seconds|m|min|mins|minutes)?\s*", str(value))
    if not found:
        return default
    number, unit = float(found.group(1)), (found.group(2) or "s")
    return number / 1000 if unit == "ms" else number * 60 if unit.startswith("m") else number


def _filesystem(uri: str, options: Mapping[str, Any] | None) -> Any:
    """A ``pyarrow.fs.S3FileSystem`` for ``uri`` configured from ``options``, with bounded
    connection time and retries; refuses at once when no credentials are configured."""
    _split(uri)  # the scheme is checked before anything else
    opts = _resolved(options)
    source = _credential_source(opts, os.environ)
    if source is None:
        given = [k for k in ("aws_access_key_id", "aws_secret_access_key") if opts.get(k)]
        what = f"only {given[0].upper()} is set" if given else "no credentials are set"
        raise InputFileError(
            f"{uri}: {what}; {_SET_KEYS}. For a public bucket: --storage-option aws_skip_signature=true."
        )
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {
        "region": str(opts.get("aws_region") or "us-east-1"),
        "connect_timeout": _duration_seconds(opts.get("connect_timeout", "5s"), 5.0),
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(
            max_attempts=int(opts.get("max_retries", DEFAULT_BOUNDS["max_retries"])) + 1
        ),
        "force_virtual_addressing": _truthy(opts.get("aws_virtual_hosted_style_request", "")),
        # A failed part upload then fails the write itself, not a later close.
        "background_writes": False,
    }
    if source == "keys":
        kwargs["access_key"] = str(opts["aws_access_key_id"])
        kwargs["secret_key"] = str(opts["aws_secret_access_key"])
        if opts.get("aws_session_token"):
            kwargs["session_token"] = str(opts["aws_session_token"])
    elif source == "anonymous":
        kwargs["anonymous"] = True
    endpoint = opts.get("aws_endpoint_url")
    if endpoint:
        parsed = urllib.parse.urlsplit(str(endpoint))
        if not parsed.scheme or not parsed.netloc:
            raise UsageError(
                f"{uri}: the endpoint {endpoint!r} is not a URL; set AWS_ENDPOINT_URL (or "
                "--storage-option aws_endpoint_url=...) to e.g. http://127.0.0.1:9000."
            )
        kwargs.update(scheme=parsed.scheme, endpoint_override=parsed.netloc + parsed.path.rstrip("/"))
    try:
        return pafs.S3FileSystem(**kwargs)
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{uri}: the object-store settings cannot be used ({exc}).") from exc


def _upload(uri: str, options: Mapping[str, Any] | None, chunks: Iterable[bytes]) -> None:
    options = _resolved(options)
    bucket, key = _split(uri)
    if not key or key.endswith("/"):
        raise UsageError(f"{uri}: an output needs an object name after the bucket, e.g. s3://{bucket}/out.csv.")
    s3 = _filesystem(uri, options)
    try:
        stream = s3.open_output_stream(f"{bucket}/{key}")
    except OSError as exc:
        raise _write_error(uri, exc, options) from exc
    try:
        for chunk in chunks:
            stream.write(chunk)
        stream.close()
    except BaseException as exc:
        _abandon(stream)
        if isinstance(exc, OSError):
            raise _write_error(uri, exc, options) from exc
        raise


def _abandon(stream: Any) -> None:
    """Keep an unfinished upload from ever completing.

    pyarrow completes an unclosed upload when its stream is destroyed, which would publish
    a truncated object after a Ctrl-C or a failed write. So the stream is kept alive until
    exit, when S3 support is shut down first: its close is then refused, and the store
    keeps only an invisible incomplete multipart upload (which a bucket lifecycle rule
    such as AbortIncompleteMultipartUpload removes).
    """
    if not _ABANDONED_UPLOADS:
        # Registered after pyarrow's own exit hook, so it runs before it (last in, first out).
        atexit.register(_discard_abandoned_uploads)
    _ABANDONED_UPLOADS.append(stream)


def _discard_abandoned_uploads() -> None:
    import pyarrow.fs as pafs

    pafs.finalize_s3()
    # Arrow reports each refused close on stderr; that says nothing the user can act on.
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            _ABANDONED_UPLOADS.clear()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _write_error(uri: str, exc: OSError, options: Mapping[str, Any] | None) -> PricelabError:
    mapped = cloud_error(uri, exc, options)
    if "cannot be read" in str(mapped):  # not a store, credential or bucket problem
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return PricelabError(f"{uri}: the object could not be written ({first[:300]}).")
    return mapped
