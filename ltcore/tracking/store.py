"""Reaching an MLflow tracking store: URIs, the start check, HTTP policy, error reading, locks.

The local sqlite store is created and migrated under a file lock (:func:`store_lock`), so any
number of first runs at once succeed, and writes that meet "database is locked" are retried a
bounded number of times (:func:`retry_locked`). The commands that only read (compare, report)
never create or migrate a store: :func:`require_store` refuses one that does not exist or is
not MLflow's, and leaves it as it is.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from ..errors import TrackingError  # noqa: E402

DEFAULT_URI = "sqlite:///mlflow.db"

RUN_TAGS_ENV = "LTCORE_RUN_TAGS"
"""Environment variable holding a JSON object of extra tags for every run this process creates."""

START_TIMEOUT_ENV = "LTCORE_TRACKING_START_TIMEOUT"
"""Seconds the start check waits for the tracking server (default :data:`START_TIMEOUT`)."""

START_TIMEOUT = 5
"""Default timeout (s) of the start check; it makes no retries."""

RUN_RETRIES, RUN_BACKOFF, RUN_TIMEOUT = 2, 1, 30
"""HTTP policy of calls after the start, unless ``MLFLOW_HTTP_REQUEST_*`` are set: two retries,
back-off factor 1 s, a 30 s timeout (MLflow's own default retries for minutes)."""

PROBE_TIMEOUT = 5
"""Timeout (s) of the single, retry-free request that checks whether an offline store is back."""


REFUSED_CODES = frozenset({
    "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
    "INVALID_STATE", "BAD_REQUEST", "MALFORMED_REQUEST", "PERMISSION_DENIED", "NOT_FOUND",
    "ENDPOINT_NOT_FOUND", "CUSTOMER_UNAUTHORIZED", "UNAUTHENTICATED", "INVALID_STATE_TRANSITION",
})
"""MLflow error codes meaning that the store answered and refused the record (not transient)."""



def _warn(message: str) -> None:
    """Tell the user at once, on stderr (also inside a sweep cell's log)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def default_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the local sqlite store ``sqlite:///mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def resolve_uri(uri: str | None = None) -> str:
    """``uri`` (else :func:`default_uri`) with a relative sqlite path made absolute: MLflow
    caches stores by URI, so a relative one would follow the process's first directory."""
    uri = uri or default_uri()
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not os.path.isabs(uri[len(prefix):]):
        uri = prefix + os.path.abspath(uri[len(prefix):])
    return uri


def start_timeout() -> float:
    """The start check's timeout in seconds (``LTCORE_TRACKING_START_TIMEOUT``, default 5)."""
    raw = os.environ.get(START_TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else START_TIMEOUT
    except ValueError as exc:
        raise TrackingError(f"{START_TIMEOUT_ENV}={raw!r} is not a number of seconds") from exc
    return max(1.0, value)


@contextmanager
def http_policy(retries: int, timeout: float, backoff: int = 0,
                override: bool = True) -> Iterator[None]:
    """Set MLflow's HTTP retry count, back-off factor and timeout for the calls inside.

    MLflow reads ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``..._BACKOFF_FACTOR`` and ``..._TIMEOUT``
    at every request. With ``override=False`` a value the user set in the environment wins.
    """
    values = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(int(retries)),
              "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(int(backoff)),
              "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(round(timeout))))}
    saved = {}
    for name, value in values.items():
        if override or name not in os.environ:
            saved[name] = os.environ.get(name)
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def extra_run_tags() -> dict[str, str]:
    """The tags ``LTCORE_RUN_TAGS`` adds to every run (a JSON object of strings)."""
    raw = os.environ.get(RUN_TAGS_ENV, "")
    if not raw:
        return {}
    try:
        tags = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise TrackingError(f"{RUN_TAGS_ENV} is not valid JSON: {exc}") from exc
    if not isinstance(tags, dict):
        raise TrackingError(f"{RUN_TAGS_ENV} must be a JSON object of tag -> value")
    return {str(k): str(v) for k, v in tags.items()}


GIT_COMMIT_TAG = "mlflow.source.git.commit"
GIT_BRANCH_TAG = "mlflow.source.git.branch"
GIT_REPO_URL_TAG = "mlflow.source.git.repoURL"
GIT_DIRTY_TAG = "ltcore.git.dirty"

GIT_TIMEOUT = 5
"""Seconds each ``git`` call may take before the source tags are left out."""


def _git(cwd: str, *args: str) -> str | None:
    """The output of ``git args`` in ``cwd``; None when git is missing, fails or is slow."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def source_tags(cwd: str) -> dict[str, str]:
    """The source version of the code run from ``cwd``, as MLflow's own tags: the commit, the
    branch (not when detached), the ``origin`` URL without credentials, and ``ltcore.git.dirty``
    (``true`` when tracked files differ from the commit). Empty outside a git repository or
    without git; computed once per directory and process."""
    head = _git(cwd, "rev-parse", "HEAD", "--abbrev-ref", "HEAD")
    if not head or len(head.split()) != 2:
        return {}
    commit, branch = head.split()
    tags = {GIT_COMMIT_TAG: commit}
    if branch != "HEAD":
        tags[GIT_BRANCH_TAG] = branch
    url = _git(cwd, "config", "--get", "remote.origin.url")
    if url:
        tags[GIT_REPO_URL_TAG] = re.sub(r"^(\w+://)[^/@]*@", r"\1", url)
    status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    if status is not None:
        tags[GIT_DIRTY_TAG] = "true" if status else "false"
    return tags


@contextmanager
def extra_tags(tags: dict[str, str]) -> Iterator[None]:
    """Add ``tags`` to every run created inside (merged over ``LTCORE_RUN_TAGS``)."""
    saved = os.environ.get(RUN_TAGS_ENV)
    os.environ[RUN_TAGS_ENV] = json.dumps({**extra_run_tags(), **tags})
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(RUN_TAGS_ENV, None)
        else:
            os.environ[RUN_TAGS_ENV] = saved


TRANSPORT_FAILURES = ("Connection refused", "Read timed out", "timed out", "Connection reset",
                      "Name or service not known", "Temporary failure in name resolution",
                      "No route to host", "Connection aborted", "Remote end closed connection")


def describe(exc: BaseException, limit: int = 300) -> str:
    """A one-line description of a tracking failure (the transport cause first, when known)."""
    text = " ".join(str(exc).split())
    for needle in TRANSPORT_FAILURES:
        if needle in text:
            request = re.search(r"API request to (\S+)", text)
            where = f" ({request.group(1)})" if request else ""
            return f"{type(exc).__name__}: {needle.lower()}{where}"
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"{type(exc).__name__}: {text}"


def refused(exc: BaseException) -> bool:
    """True when ``exc`` is the store's answer refusing a record (not a transport failure)."""
    return getattr(exc, "error_code", None) in REFUSED_CODES


LOCK_RETRIES = 12
"""Attempts of a call that meets a locked sqlite database (with back-off, about 30 s in all)."""


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Inside, no other process creates or migrates the same local sqlite store: MLflow's
    schema creation and migrations are not safe to run twice at once. A no-op for servers."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        yield
        return
    import fcntl

    path = Path(uri[len(prefix):])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def retry_locked(call, *args, **kwargs):
    """``call(*args, **kwargs)``, tried again with back-off while a sqlite store answers
    "database is locked" (another process is writing), at most :data:`LOCK_RETRIES` times."""
    for attempt in range(LOCK_RETRIES):
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            if "database is locked" not in str(exc) or attempt == LOCK_RETRIES - 1:
                raise
            time.sleep(min(0.05 * 2 ** attempt, 5.0))


QUIET_LOGGERS = ("mlflow.store.db.utils",)
"""MLflow loggers that print a full traceback for each database error (and chatter about
creating tables): the tracker reports what failed in one line instead."""


def open_store(uri: str, create: bool = True):
    """An ``MlflowClient`` on ``uri`` whose store exists: a new sqlite store is created and
    migrated under :func:`store_lock` (without ``create``, :func:`require_store` has found it
    complete, so nothing is created); the first call raises what the store raised."""
    import logging

    from mlflow.tracking import MlflowClient

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    with store_lock(uri) if create else nullcontext():
        client = MlflowClient(tracking_uri=uri)
        retry_locked(client.search_experiments, max_results=1)
    return client


def connect(uri: str | None = None, create: bool = True):
    """An ``MlflowClient`` on ``uri`` after a quick reachability check; raises TrackingError.
    Without ``create`` (the commands that only read) a store that does not exist or is not
    MLflow's is refused and left as it is (:func:`require_store`)."""
    uri = resolve_uri(uri)
    with http_policy(retries=0, timeout=start_timeout()):
        try:
            if not create:
                require_store(uri)
            return open_store(uri, create)
        except TrackingError:
            raise
        except Exception as exc:
            raise unreachable(uri, exc) from exc


DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
"""The database schemes of tracking URIs (a driver may follow: ``postgresql+psycopg2``)."""


def require_store(uri: str) -> None:
    """Raise TrackingError unless ``uri`` is a server or a store with all of MLflow's tables,
    looking without writing anything (a sqlite file is opened read-only): MLflow itself would
    create a store that is missing and add its tables to a database that lacks them. Other
    failures (a database server that does not answer) are raised as they are."""
    import sqlalchemy
    from mlflow.store.db.utils import _all_tables_exist  # MLflow's own test before it creates
    from mlflow.utils.uri import is_databricks_uri

    scheme = urlparse(uri).scheme
    if scheme == "file" or not (scheme or is_databricks_uri(uri)):
        where = urlparse(uri).path if scheme else uri
        if not os.path.isdir(where):
            raise no_store(where)
        return
    if scheme.partition("+")[0] not in DATABASES or uri == "sqlite://":
        return  # a server (the start check asks it), or sqlite in memory
    if scheme == "sqlite":
        where = uri[len("sqlite:///"):]
        if not os.path.isfile(where):
            raise no_store(where)
        read_only = f"{Path(where).as_uri()}?mode=ro"
        engine = sqlalchemy.create_engine(
            "sqlite://", creator=lambda: sqlite3.connect(read_only, uri=True))
    else:
        where = uri
        engine = sqlalchemy.create_engine(uri)
    try:
        if _all_tables_exist(engine):
            return
        older = "alembic_version" in sqlalchemy.inspect(engine).get_table_names()
    except sqlalchemy.exc.DatabaseError:
        if scheme != "sqlite":
            raise  # the server of the database did not answer
        older = False  # a file that is not a sqlite database
    finally:
        engine.dispose()
    if older:
        raise TrackingError(f"{where!r} is the store of an older MLflow, without some of the "
                            "tables this one needs; it was left as it is: upgrade it with "
                            f"'mlflow db upgrade {uri}' (after a backup), or point "
                            "--tracking-uri elsewhere")
    raise TrackingError(f"{where!r} is not an MLflow store (it lacks MLflow's tables); it was "
                        "left as it is: point --tracking-uri (or MLFLOW_TRACKING_URI) at the "
                        "store the runs were recorded in")


def no_store(where: str) -> TrackingError:
    return TrackingError(f"there is no MLflow store at {where!r}, and nothing was created there: "
                         "point --tracking-uri (or MLFLOW_TRACKING_URI) at the store the runs "
                         "were recorded in")


def unreachable(uri: str, exc: BaseException) -> TrackingError:
    return TrackingError(f"cannot reach the MLflow tracking store at {uri!r}: {describe(exc)}. "
                         "Start the server (docs/tracking.md), or point --tracking-uri / "
                         "MLFLOW_TRACKING_URI elsewhere")


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""The experiment tag that makes the MLflow UI open ltcore's experiments in its model-training
view (not the GenAI one)."""


def experiment_id(client, name: str, create: bool = True) -> str | None:
    """The id of experiment ``name`` (created when missing and ``create``, marked as a
    model-training experiment; two processes may race to create it, the loser finds the
    winner's)."""
    found = retry_locked(client.get_experiment_by_name, name)
    if found is not None and create and not EXPERIMENT_KIND.items() <= found.tags.items():
        for key, value in EXPERIMENT_KIND.items():  # made elsewhere, e.g. MLflow's Default
            retry_locked(client.set_experiment_tag, found.experiment_id, key, value)
    if found is not None:
        return found.experiment_id
    if not create:
        return None
    try:
        return retry_locked(client.create_experiment, name, tags=EXPERIMENT_KIND)
    except Exception:
        found = retry_locked(client.get_experiment_by_name, name)
        if found is None:
            raise
        return found.experiment_id
