"""Worker processes (cxnlp.processes): forked from a fork server that has imported cxnlp, never from the
main process; each worker takes the caller's environment and working directory as they are when its pool
is made, as a spawned one would."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from pathlib import Path

import pytest

from cxnlp import processes
from cxnlp.batch import may_use_workers
from cxnlp.config import load_config


def _probe() -> dict:
    return {
        "pid": os.getpid(),
        "parent": os.getppid(),
        "env": os.environ.get("CXNLP_PROBE"),
        "cwd": os.getcwd(),
        "cxnlp_imported": "cxnlp.segment" in sys.modules,
    }


@pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(), reason="no fork server on this platform"
)
def test_workers_fork_from_the_server_with_the_callers_env_and_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv(processes.START_METHOD_ENV, raising=False)
    assert processes.context().get_start_method() == "forkserver"
    assert processes.warm_up()  # the server now dates from before the variable and the directory below
    monkeypatch.setenv("CXNLP_PROBE", "after the server started")
    monkeypatch.chdir(tmp_path)
    with processes.pool(2) as pool:
        seen = [pool.submit(_probe).result() for _ in range(2)]
    for worker in seen:
        assert worker["pid"] != os.getpid() and worker["parent"] != os.getpid()  # forked by the server
        assert worker["env"] == "after the server started"
        assert Path(worker["cwd"]).resolve() == tmp_path.resolve()
        assert worker["cxnlp_imported"]  # preloaded: nothing left to import
    monkeypatch.delenv("CXNLP_PROBE")
    with processes.pool(1) as pool:
        assert pool.submit(_probe).result()["env"] is None  # removed variables are removed there too


def test_start_method_can_be_forced_to_spawn(monkeypatch):
    monkeypatch.setenv(processes.START_METHOD_ENV, "spawn")
    assert processes.context().get_start_method() == "spawn"
    assert processes.warm_up() is False
    monkeypatch.setenv("CXNLP_PROBE", "spawned")
    with processes.pool(1) as pool:
        worker = pool.submit(_probe).result()
    assert worker["parent"] == os.getpid() and worker["env"] == "spawned"
    monkeypatch.setenv(processes.START_METHOD_ENV, "fork")
    with pytest.raises(ValueError, match="forkserver or spawn"):
        processes.context()


def test_may_use_workers_only_for_inputs_of_several_chunks(tmp_path):
    row = json.dumps({"id": "r1", "text": "The parcel arrived two days late."}) + "\n"
    small = tmp_path / "small.jsonl"
    small.write_text(row * 10)
    big = tmp_path / "big.jsonl"
    big.write_text(row * 300)
    config = load_config(None, {"batch": {"chunk_size": 100}})
    assert not may_use_workers(config, [str(small)])
    assert may_use_workers(config, [str(big)])
    assert may_use_workers(config, [str(tmp_path / "*.jsonl")])  # globs count every file
    assert may_use_workers(config, ["-"])  # stdin: unknown length
    assert not may_use_workers(config, [str(tmp_path / "missing.jsonl")])  # the reader reports it
    assert may_use_workers(config, [{"text": "x"}] * 101) and not may_use_workers(
        config, [{"text": "x"}] * 100
    )
    assert not may_use_workers(load_config(None, {"batch": {"chunk_size": 100, "workers": 0}}), [str(big)])
    assert not may_use_workers(load_config(None, {"batch": {"chunk_size": 100, "engine": "ray"}}), [str(big)])


_PRELOAD_SCRIPT = """
import json, sys
from cxnlp import processes
from cxnlp.redact import load_ner
from cxnlp.segment import load_spacy


def probe():
    return [load_spacy.cache_info().currsize, load_ner.cache_info().currsize]


if __name__ == "__main__":
    if sys.argv[1] == "preload":
        processes.preload_spacy("en_core_web_sm", ner=True)
    processes.warm_up()
    with processes.pool(1) as pool:
        print(json.dumps(pool.submit(probe).result()))
"""


@pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(), reason="no fork server on this platform"
)
def test_the_fork_server_loads_the_named_spacy_pipelines_for_its_workers(tmp_path):
    """preload_spacy: a worker forked from the server starts with the segmentation and NER pipelines
    loaded (in load_spacy's and load_ner's caches); without it, it starts with neither."""
    import subprocess

    script = tmp_path / "preload_probe.py"
    script.write_text(_PRELOAD_SCRIPT)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in (processes.PRELOAD_SPACY_ENV, processes.START_METHOD_ENV)
    }

    def worker_caches(mode: str) -> list[int]:
        done = subprocess.run(
            [sys.executable, str(script), mode],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=True,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert worker_caches("preload") == [1, 1]
    assert worker_caches("plain") == [0, 0]
