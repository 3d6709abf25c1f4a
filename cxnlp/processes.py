"""Worker processes for cxnlp's process pools: prepare workers, reduce loaders and cluster workers.

cxnlp never forks its main process: it may hold torch's threads (and on an accelerator a CUDA context),
which a fork would copy mid-lock. Where the platform has it (Linux, macOS), the pools use
multiprocessing's *forkserver*: a server process, started from a clean interpreter, imports cxnlp,
pandas, pyarrow and spaCy once (:data:`PRELOAD`), and each worker is forked from it, ready in well
under a second instead of the 4-6 s that a fresh interpreter (``spawn``) takes to import them on a
2-core machine. Elsewhere (Windows), or with ``CXNLP_START_METHOD=spawn``, workers are spawned.

:func:`warm_up` starts the server early: ``cxnlp analyze`` calls it before it loads the models when the
input may hold more than one chunk, so that the server's imports overlap the model loading. Named first
with :func:`preload_spacy`, the spaCy pipelines are loaded in the server too, once, not in each worker. A worker
takes the caller's environment variables and working directory at the time the pool is made
(:func:`pool`), as a spawned one would, not the server's, which date from its start.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext

# What the server imports before it forks a worker (an import that fails is skipped by multiprocessing).
# The last loads the spaCy pipelines that preload_spacy named (cxnlp._preload).
PRELOAD = ("cxnlp.batch", "cxnlp.segment", "cxnlp.redact", "spacy", "cxnlp._preload")
START_METHOD_ENV = "CXNLP_START_METHOD"
# How preload_spacy tells the fork server, which is started with this process's environment, what to load.
PRELOAD_SPACY_ENV = "CXNLP_FORKSERVER_SPACY"


def context() -> BaseContext:
    """forkserver (with :data:`PRELOAD`) where the platform has it, else spawn; ``CXNLP_START_METHOD``
    (``forkserver`` or ``spawn``) overrides."""
    wanted = os.environ.get(START_METHOD_ENV, "forkserver").strip().lower() or "forkserver"
    if wanted not in ("forkserver", "spawn"):
        raise ValueError(f"{START_METHOD_ENV}={wanted!r}: use forkserver or spawn")
    if wanted == "spawn" or "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))  # no effect once the server runs
    return ctx


def preload_spacy(name: str, ner: bool) -> None:
    """Have the fork server, when it starts after this call, load the spaCy pipeline ``name`` for
    segmentation (and, with ``ner``, for redaction's NER), so that the workers it forks have them.
    A server that already runs keeps what it has; its workers load what they lack themselves."""
    os.environ[PRELOAD_SPACY_ENV] = f"{name}|{'ner' if ner else ''}"


def preload_request() -> tuple[str, bool] | None:
    """What :func:`preload_spacy` named, as the fork server reads it from its environment: the
    pipeline and whether its NER is wanted too; None when nothing was named."""
    spec = os.environ.get(PRELOAD_SPACY_ENV, "")
    if not spec:
        return None
    name, _, ner = spec.partition("|")
    return name, ner == "ner"


def warm_up() -> bool:
    """Start the fork server now (it imports :data:`PRELOAD` in the background); False where workers
    are spawned."""
    if context().get_start_method() != "forkserver":
        return False
    from multiprocessing import forkserver

    forkserver.ensure_running()
    return True


def _init_worker(env: dict[str, str], cwd: str, nice: int) -> None:
    """Worker initializer: the caller's environment and working directory, then ``nice`` (Unix)."""
    if dict(os.environ) != env:
        os.environ.clear()
        os.environ.update(env)
    with contextlib.suppress(OSError):
        os.chdir(cwd)
    if nice:  # on Windows (no os.nice) or where it is forbidden: normal priority
        with contextlib.suppress(AttributeError, OSError):
            os.nice(nice)


def pool(max_workers: int, nice: int = 0) -> ProcessPoolExecutor:
    """A process pool of :func:`context`'s workers, each with this process's environment variables and
    working directory, at ``nice`` (lower priority) when given."""
    return ProcessPoolExecutor(
        max_workers=max_workers,
        mp_context=context(),
        initializer=_init_worker,
        initargs=(dict(os.environ), os.getcwd(), nice),
    )
