"""Remote workdirs and data directories (``gs://``, ``s3://``): checked before JAX starts.

Why it exists: a ``gs://`` workdir without ``gcsfs`` used to end in a traceback after
JAX had started (and claimed the accelerators), and TensorBoard's event files on
``gs://`` need ``google-cloud-storage``, which nothing declared. The paths are opened
through etils' epath: with TensorFlow installed through ``tf.io.gfile`` (``gs://``
natively), without it through fsspec, which opens ``gs://`` with ``gcsfs`` and ``s3://``
with ``s3fs``; tensorboardX writes ``gs://`` with ``google-cloud-storage`` and ``s3://``
with ``boto3``. :func:`preflight` checks that these packages can be imported (without
importing them), then that each bucket answers one cheap ``info`` call within
``TIMEOUT_S`` seconds. Each failure is one :class:`~noise_scale.errors.UsageError` (exit
status 2) naming the path, the package or the bucket, and the fix; nothing is written.
Other schemes (``az://``, ``hf://``) are left to epath, which names what it lacks.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import threading

from noise_scale.errors import UsageError

TIMEOUT_S = 10.0  # for the bucket's answer; a reachable bucket answers in well under 1 s


@dataclasses.dataclass(frozen=True)
class Store:
    """What paths of one URL scheme need: the packages that open them, and the fixes."""

    filesystem: str  # the module fsspec opens the scheme with
    filesystem_package: str  # its name on PyPI
    tensorboard: str  # the module tensorboardX writes event files to the scheme with
    tensorboard_package: str
    extra: str  # how to get both with noise_scale ('' if no extra has them)
    credentials: str  # where an unreachable bucket's credentials come from
    gfile: bool = False  # TensorFlow's tf.io.gfile opens it without `filesystem`


STORES = {
    "gs": Store("gcsfs", "gcsfs", "google.cloud.storage", "google-cloud-storage",
                "pip install 'noise_scale[tpu]' (or [cuda]), which has both",
                "gcloud auth application-default login, or the VM's service account",
                gfile=True),
    "s3": Store("s3fs", "s3fs", "boto3", "boto3", "", "aws configure, or the instance's role"),
}


def scheme(path: str) -> str:
    """``gs`` for ``gs://bucket/x``; '' for a local path."""
    head, sep, _ = (path or "").partition("://")
    return head.lower() if sep else ""


def importable(module: str) -> bool:
    """Whether ``import module`` would find it, without importing it (or JAX with it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing; a module set to None
        return False


def uses_fsspec(store: Store) -> bool:
    """Whether epath opens the scheme through fsspec here (no TensorFlow to do it)."""
    return not (store.gfile and importable("tensorflow"))


def _install(store: Store, package: str) -> str:
    return f"pip install {package}" + (f", or {store.extra}" if store.extra else "")


def check_packages(name: str, path: str, *, tensorboard: bool) -> None:
    """The packages that open ``path`` (and write TensorBoard there) can be imported.

    ``name`` is how the user gave the path (``--workdir=...``, ``config.data_dir=...``).
    """
    kind = scheme(path)
    store = STORES.get(kind)
    if store is None:
        return
    if uses_fsspec(store) and not importable(store.filesystem):
        raise UsageError(
            f"{name} is on {kind}://, which needs the package {store.filesystem_package} "
            f"(not installed) to be read and written. Fix: "
            f"{_install(store, store.filesystem_package)}; or use a local path.")
    if tensorboard and not importable(store.tensorboard):
        raise UsageError(
            f"{name} is on {kind}://, where TensorBoard's event files are written through "
            f"the package {store.tensorboard_package} (not installed). Fix: "
            f"{_install(store, store.tensorboard_package)}; or use a local path.")


def open_filesystem(kind: str):
    """The fsspec filesystem of ``kind`` (imports gcsfs or s3fs; the tests replace it)."""
    import fsspec

    return fsspec.filesystem(kind)


def _ask(kind: str, bucket: str) -> BaseException | None:
    """Run ``info`` on the bucket in a daemon thread; the error, None, or TimeoutError."""
    answer: list[BaseException | None] = []

    def ask():
        try:
            open_filesystem(kind).info(f"{kind}://{bucket}")
            answer.append(None)
        except Exception as e:  # noqa: BLE001 - any failure is the user's to see
            answer.append(e)

    thread = threading.Thread(target=ask, name=f"reach {kind}://{bucket}", daemon=True)
    thread.start()
    thread.join(TIMEOUT_S)  # a daemon thread left waiting does not hold up the exit
    return answer[0] if answer else TimeoutError()


_REACHED: set[tuple[str, str]] = set()  # buckets that answered in this process


def check_reachable(name: str, path: str) -> None:
    """``path``'s bucket answers within ``TIMEOUT_S`` seconds (when fsspec opens it here)."""
    kind = scheme(path)
    store = STORES.get(kind)
    if store is None or not uses_fsspec(store) or not importable(store.filesystem):
        return  # TensorFlow opens it: no cheap call without importing TensorFlow
    bucket = path.split("://", 1)[1].split("/", 1)[0]
    if (kind, bucket) in _REACHED:
        return
    error = _ask(kind, bucket)
    where = f"{name}: the bucket {kind}://{bucket}"
    if isinstance(error, TimeoutError):
        raise UsageError(f"{where} did not answer within {TIMEOUT_S:g} s. Fix: check the "
                         f"network and the credentials ({store.credentials}), or use a local "
                         "path.")
    if isinstance(error, FileNotFoundError):
        raise UsageError(f"{where} does not exist or this account cannot see it. Fix: correct "
                         f"the bucket's name, create it, or grant access to it "
                         f"({store.credentials}).")
    if error is not None:
        said = (str(error).strip().splitlines() or [""])[0][:200]
        raise UsageError(f"{where} cannot be reached ({type(error).__name__}: {said}). Fix: "
                         f"check the credentials ({store.credentials}) and the network, or "
                         "use a local path.")
    _REACHED.add((kind, bucket))


def preflight(workdir: str | None, data_dir: str, *, tensorboard: bool = True) -> None:
    """A remote workdir and ``data_dir`` can be opened: packages first, then the buckets.

    ``tensorboard``: the run writes TensorBoard's event files into the workdir (training
    always does). Local paths are not looked at here (``validation.validate_paths``).
    """
    paths = [(f"--workdir={workdir}", workdir or "", tensorboard),
             (f"config.data_dir={data_dir!r}", data_dir or "", False)]
    for name, path, writes_tensorboard in paths:
        check_packages(name, path, tensorboard=writes_tensorboard)
    for name, path, _ in paths:
        check_reachable(name, path)
