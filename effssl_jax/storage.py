"""The files of a run, local or in a bucket: every read and write under a workdir or an output path
goes through here, so `gs://bucket/run` (and `s3://`, with s3fs installed) works wherever a local
path does.

Remote paths go to fsspec (gcsfs for gs://), which is what etils `epath` (orbax's path layer)
uses for gs:// without TensorFlow; fsspec directly, because it exposes what object storage needs
and epath does not: a create-if-absent write (GCS `ifGenerationMatch=0`, for the workdir lock) and
control over its listing cache (another process's writes must be seen). Local paths stay on `os`.

What each kind guarantees (docs/multi_host.md): a whole-file write (`write_text`, `write_bytes`)
is never seen half-done: locally a temporary file renamed over the target, remotely a single PUT,
which object storage makes visible whole or not at all. Object storage has no append and no
rename: run_log.py writes metrics as numbered objects instead, and `move` copies then deletes.

Faults that the user fixes (a missing bucket, no credentials, no permission) raise StorageError,
one line naming the fix.
"""
from __future__ import annotations

import contextlib
import io
import os
import posixpath

from effssl_jax.errors import UserError


class StorageError(UserError):
    """A bucket that is missing, or that these credentials cannot reach."""


def is_remote(path) -> bool:
    """Whether `path` is a URL of an object store (gs://, s3://, ...), not a local path."""
    return "://" in str(path) and not str(path).startswith("file://")


def join(base, *parts) -> str:
    base = str(base)
    if is_remote(base):
        return posixpath.join(base.rstrip("/"), *parts)
    return os.path.join(base, *parts)


def dirname(path) -> str:
    path = str(path)
    return posixpath.dirname(path.rstrip("/")) if is_remote(path) else os.path.dirname(path)


def basename(path) -> str:
    path = str(path)
    return posixpath.basename(path.rstrip("/")) if is_remote(path) else \
        os.path.basename(os.path.normpath(path))


def absolute(path) -> str:
    """A local path made absolute; a URL as it is."""
    return str(path) if is_remote(path) else os.path.abspath(path)


def _fs(path: str):
    """(fsspec filesystem, the path as it names it), the listing caches of every instance of its
    kind dropped (orbax's epath keeps its own instance): the objects may have been changed by
    another process, or through another instance, since they were filled."""
    import fsspec
    fs, stripped = fsspec.core.url_to_fs(path)
    for instance in {id(fs): fs, **getattr(type(fs), "_cache", {})}.values():
        instance.invalidate_cache()
    return fs, stripped


def refresh(path) -> None:
    """Drops what this process has cached of listings in `path`'s store (fsspec's, orbax's too):
    for a reader about to list what another process, or `move`, has changed."""
    if is_remote(path):
        _fs(str(path))


def _bucket(path: str) -> str:
    scheme, rest = path.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


@contextlib.contextmanager
def _errors(path: str, doing: str):
    """Turns what an object store raises for a missing bucket, missing credentials or a refused
    request into one line; other errors (a missing object: FileNotFoundError) pass."""
    try:
        yield
    except (UserError, FileExistsError, IsADirectoryError):
        raise
    except Exception as e:  # noqa: BLE001 - the stores raise many types; only some are ours
        message = _fault(path, doing, e)
        if message is None:
            raise
        raise StorageError(message) from e


def _fault(path: str, doing: str, e: Exception) -> str | None:
    """The line for `e` if it is a fault of the bucket or the credentials, else None."""
    name, code = type(e).__name__, getattr(e, "code", None)  # gcsfs's HttpError has the status
    if (name in ("DefaultCredentialsError", "RefreshError", "NoCredentialsError")
            or code == 401 or "Anonymous caller" in str(e)):
        return (f"no credentials to {doing} {path}: run `gcloud auth application-default login` "
                "(or set GOOGLE_APPLICATION_CREDENTIALS to a service account key; on a Cloud TPU "
                "or GCE VM, give the VM's service account access)")
    if isinstance(e, PermissionError) or code == 403 or str(e).startswith("Forbidden"):
        return (f"no permission to {doing} {path}: grant this account read and write on bucket "
                f"{_bucket(path)} (e.g. roles/storage.objectUser), or use another path")
    if isinstance(e, FileNotFoundError) and not _bucket_exists(path):
        return (f"bucket {_bucket(path)} does not exist ({doing} {path}): create it (`gcloud "
                "storage buckets create`) or fix the path")
    return None


def _bucket_exists(path: str) -> bool:
    fs, bucket = _fs(_bucket(path))
    try:
        return bool(fs.exists(bucket))
    except Exception:  # noqa: BLE001 - cannot tell: say nothing about the bucket
        return True


def exists(path) -> bool:
    path = str(path)
    if not is_remote(path):
        return os.path.exists(path)
    with _errors(path, "read"):
        fs, p = _fs(path)
        return fs.exists(p)


def isdir(path) -> bool:
    """A local directory; remotely, a prefix that has objects under it (or a bucket)."""
    path = str(path)
    if not is_remote(path):
        return os.path.isdir(path)
    with _errors(path, "read"):
        fs, p = _fs(path)
        return fs.isdir(p)


def makedirs(path) -> None:
    """A local directory and its parents; remotely only a check that the bucket is there and
    reachable (object stores have no directories)."""
    path = str(path)
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)
        return
    with _errors(path, "use"):
        fs, bucket = _fs(_bucket(path))
        if not fs.exists(bucket):
            raise FileNotFoundError(bucket)


def listdir(path) -> list[str]:
    """The names directly under `path`, sorted; [] if there is nothing."""
    path = str(path)
    if not is_remote(path):
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    with _errors(path, "list"):
        fs, p = _fs(path)
        try:
            entries = fs.ls(p, detail=False)
        except FileNotFoundError:
            return []
    return sorted(posixpath.basename(e.rstrip("/")) for e in entries if e.rstrip("/") != p)


def files_under(root) -> list[str]:
    """Every file under `root` (recursively, links followed), as paths relative to it with '/'
    separators, in no particular order."""
    root = str(root)
    if not is_remote(root):
        return [os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
                for d, _, files in os.walk(root, followlinks=True) for f in files]
    with _errors(root, "list"):
        fs, p = _fs(root)
        prefix = p.rstrip("/") + "/"
        return [f[len(prefix):] for f in fs.find(p) if f.startswith(prefix)]


def glob(root, pattern: str) -> list[str]:
    """The paths under `root` (taken literally) that match the glob `pattern`, sorted."""
    root = str(root)
    if not is_remote(root):
        import glob as glob_lib
        return sorted(glob_lib.glob(os.path.join(glob_lib.escape(root), pattern)))
    with _errors(root, "list"):
        fs, p = _fs(root)
        scheme = root.split("://", 1)[0]
        return sorted(f"{scheme}://{f}" for f in fs.glob(posixpath.join(p, pattern)))


def read_bytes(path) -> bytes:
    path = str(path)
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read()
    with _errors(path, "read"):
        fs, p = _fs(path)
        return fs.cat_file(p)


def read_text(path) -> str:
    return read_bytes(path).decode()


def write_bytes(path, data: bytes) -> None:
    """Writes the whole file; a reader sees the old content or the new, never part of it."""
    path = str(path)
    if not is_remote(path):
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    with _errors(path, "write"):
        fs, p = _fs(path)
        fs.pipe_file(p, data)  # one PUT: visible whole or not at all


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode())


def create(path, text: str) -> bool:
    """Creates `path` holding `text` if nothing is there (atomically: O_EXCL locally, a
    create-if-absent precondition remotely); False if it exists."""
    path = str(path)
    if not is_remote(path):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True
    with _errors(path, "write"):
        fs, p = _fs(path)
        try:
            fs.pipe_file(p, text.encode(), mode="create")  # GCS: ifGenerationMatch=0
        except FileExistsError:
            return False
    return True


def remove(path) -> None:
    """Deletes a file if it is there."""
    path = str(path)
    if not is_remote(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    with _errors(path, "delete"):
        fs, p = _fs(path)
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(p)


def move(src, dst) -> None:
    """Moves a directory to `dst` (replacing what is there): a rename locally; remotely a copy
    then a delete, as object stores have no rename."""
    src, dst = str(src), str(dst)
    if not is_remote(src):
        import shutil
        shutil.rmtree(dst, ignore_errors=True)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(src, dst)
        return
    with _errors(src, "move"):
        fs, s = _fs(src)
        d = _fs(dst)[1]
        if fs.exists(d):
            fs.rm(d, recursive=True)
        fs.copy(s, d, recursive=True)
        fs.rm(s, recursive=True)


@contextlib.contextmanager
def open_for_writing(path):
    """A binary file object whose content becomes `path` when the block ends (for writers that
    take a file: matplotlib's savefig, numpy's savez), written whole as by `write_bytes`."""
    buffer = io.BytesIO()
    yield buffer
    write_bytes(path, buffer.getvalue())
