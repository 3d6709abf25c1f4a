"""Safe by construction, and faults: models from safetensors only, nothing unpickled, nothing written
outside OUTDIR, escaping checked in a real browser; disk full, unwritable OUTDIR, missing models, out of
memory, interrupted and killed runs, too many rejects. Each fault: a clear message, a non-zero exit
code, and no partial output that looks complete."""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from cxnlp.cli import cli
from cxnlp.errors import ModelError, PipelineError
from cxnlp.output import MARKER
from tests.conftest import FIXTURES, ROOT

PACKAGE = ROOT / "cxnlp"
SMALL = '{"id": "s1", "text": "The box was late again and the driver was rude."}\n{"id": "s2", "text": "Lovely food, quick refund."}\n'


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def tree(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


@pytest.fixture
def previous_run(tmp_path, mixed_result):
    """OUTDIR holding a complete earlier run."""
    out = mixed_result.write(tmp_path / "out")
    return out, (out / MARKER).read_text()


def assert_untouched(out: Path, marker: str) -> None:
    assert (out / MARKER).read_text() == marker
    assert (out / "documents.parquet").is_file()
    left = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    # No staging folder is left; the batch work folder (committed chunks) stays for the rerun to resume.
    assert left in ([], [f".{out.name}.work"])
    if left:
        assert any((out.parent / left[0] / "chunks").iterdir())


# ------------------------------------------------------------------------------- safe by construction


@pytest.mark.parametrize(
    "pattern",
    [
        r"trust_remote_code\s*=\s*True",
        r"torch\.load\(",
        r"^\s*import pickle|^\s*from pickle|pickle\.loads?\(",
        r"cPickle|dill\b|joblib",
        r"read_pickle",
        r"allow_pickle\s*=\s*True",
        r"yaml\.load\(|yaml\.unsafe_load|yaml\.Loader",
        r"(?<![\w.])(eval|exec)\(",
    ],
)
def test_safety_package_source_has_no_unsafe_loading(pattern):
    hits = []
    for path in PACKAGE.rglob("*.py"):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if re.search(pattern, line, re.M):
                hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert hits == []


def test_safety_models_are_safetensors_only():
    from cxnlp.models import encoder_location, find_model_dir

    heads = find_model_dir("cx-heads")
    weights = [
        p.name
        for p in heads.iterdir()
        if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".pkl", ".ckpt", ".h5")
    ]
    assert weights == ["heads.safetensors"]
    encoder = Path(encoder_location(None))
    assert (encoder / "model.safetensors").is_file()
    assert not [p for p in encoder.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    src = (PACKAGE / "models.py").read_text()
    assert "trust_remote_code=False" in src and "safetensors" in src


class _Payload:
    """Unpickling this would create a file: the test checks it never appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize(
    "name", ["reviews.parquet", "reviews.jsonl", "reviews.json", "reviews.csv", "reviews.pkl"]
)
def test_safety_no_user_file_is_ever_unpickled(tmp_path, name):
    marker = tmp_path / "UNPICKLED"
    (tmp_path / name).write_bytes(pickle.dumps(_Payload(marker)))
    result = invoke("analyze", str(tmp_path / name), "-o", str(tmp_path / "o"), "-q")
    assert result.exit_code in (1, 2) and "Traceback" not in result.output
    assert not marker.exists()


def test_safety_a_pickled_heads_file_is_refused_not_loaded(tmp_path):
    marker = tmp_path / "UNPICKLED"
    heads = tmp_path / "heads"
    shutil.copytree(ROOT / "models" / "cx-heads", heads)
    (heads / "heads.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    (heads / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    from cxnlp.models import _load_heads

    with pytest.raises(ModelError, match=r"\[E202\]"):
        _load_heads(str(heads))
    assert not marker.exists()


@pytest.mark.parametrize(
    "args, code",
    [
        (["--set", "output.format=../../escaped"], 2),
        (["--set", "journey.taxonomy=../../../../etc/passwd"], 2),
        (["--set", "models.heads=../../../../tmp/nowhere"], 1),
        (["--set", "segment.spacy_model=../../escaped"], 1),
        (["--text-field", "../../escaped"], 2),
        (["--config", "/etc/passwd"], 2),
    ],
)
def test_safety_config_values_cannot_write_outside_outdir(tmp_path, args, code):
    work = tmp_path / "work"
    work.mkdir()
    (work / "in.jsonl").write_text(SMALL)
    before, repo_before = tree(tmp_path), sorted(p.name for p in ROOT.iterdir())
    result = invoke("analyze", str(work / "in.jsonl"), "-o", str(work / "out"), "-q", *args)
    assert result.exit_code == code, result.output
    assert tree(tmp_path) == before  # nothing written anywhere, OUTDIR included
    assert sorted(p.name for p in ROOT.iterdir()) == repo_before


def test_safety_hostile_field_names_stay_columns(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    record = {"text": "The box was late.", "../../escaped": "x", "/tmp/abs": "y", "..": "z"}
    (work / "in.jsonl").write_text(json.dumps(record) + "\n")
    result = invoke("analyze", str(work / "in.jsonl"), "-o", str(work / "out"), "-q")
    assert result.exit_code == 0, result.output
    outside = {
        p for p in tree(tmp_path) if not p.startswith("work/out") and p not in ("work", "work/in.jsonl")
    }
    assert outside == set() and not Path("/tmp/abs").exists()


def test_safety_report_escapes_input_text_in_a_real_browser(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    payloads = [
        "<script>document.title='XSS1'</script> The box was late.",
        "<img src=x onerror=\"document.title='XSS2'\"> The refund was slow.",
        '"><svg onload="document.title=\'XSS3\'"> Support never called.',
        "</textarea></style><iframe src=javascript:alert(4)> Great food though.",
    ]
    src = tmp_path / "xss.jsonl"
    src.write_text(
        "".join(
            json.dumps({"text": p, "channel": "<b onmouseover=alert(5)>web</b>"}) + "\n" for p in payloads
        )
    )
    # strip_html=false keeps the tags in the text, so the report itself must escape them.
    result = invoke("analyze", str(src), "-o", str(tmp_path / "o"), "-q", "--set", "input.strip_html=false")
    assert result.exit_code == 0, result.output
    report = (tmp_path / "o" / "report.html").read_text(encoding="utf-8")
    assert "<script>document.title" not in report and "<img src=x" not in report and "<iframe" not in report
    if chromium is None:
        pytest.skip("no chromium: the static escaping check passed; the browser check needs chromium")
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=3000",
            "--dump-dom",
            (tmp_path / "o" / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = proc.stdout
    assert proc.returncode == 0 and "</html>" in dom, proc.stderr[-2000:]
    assert "XSS" not in re.sub(r"&lt;.*?&gt;|document\.title='XSS\d'", "", dom)  # no payload ran
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title is not None and "XSS" not in title.group(1)
    assert not re.search(r"<(img|svg|iframe|script)[^>]*(onerror|onload|javascript:|document\.title)", dom)


# -------------------------------------------------------------------------------------------- faults


def test_safety_disk_full_mid_write_keeps_the_previous_run(previous_run, monkeypatch, tmp_path):
    import cxnlp.output as output

    out, marker = previous_run
    real = output.write_table

    def half_then_enospc(table, path, fmt):  # type: ignore[no-untyped-def]
        if path.name == "segments":
            path.with_suffix(".parquet").write_bytes(b"PAR1 half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(table, path, fmt)

    monkeypatch.setattr(output, "write_table", half_then_enospc)
    src = tmp_path / "in.jsonl"
    src.write_text(SMALL)
    result = invoke("analyze", str(src), "-o", str(out), "-q")
    assert result.exit_code == 1
    assert (
        "[E213] Ran out of disk space writing the outputs for" in result.output
        and "No space left on device" in result.output
    )
    assert_untouched(out, marker)


def test_safety_disk_full_on_a_real_tiny_filesystem(tmp_path, mixed_result):
    mount = tmp_path / "tiny"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        out = mount / "out"
        out.mkdir()
        (out / MARKER).write_text('{"previous": true}')
        with pytest.raises(PipelineError) as exc:
            mixed_result.write(out)
        assert exc.value.code == "E213"
        assert (out / MARKER).read_text() == '{"previous": true}' and [p.name for p in mount.iterdir()] == [
            "out"
        ]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_safety_unwritable_outdir(tmp_path, monkeypatch, mixed_result):
    import tempfile

    parent = tmp_path / "locked"
    parent.mkdir()
    if os.geteuid() != 0:
        parent.chmod(0o500)
        try:
            with pytest.raises(PipelineError, match=r"\[E208\].*Permission denied"):
                mixed_result.write(parent / "out")
        finally:
            parent.chmod(0o700)

    # Root ignores permission bits, so the refusal is also simulated where the staging folder is made.
    def denied(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    src = tmp_path / "in.jsonl"
    src.write_text(SMALL)
    result = invoke("analyze", str(src), "-o", str(parent / "out"), "-q")
    assert (
        result.exit_code == 1
        and "[E208] Output directory" in result.output
        and "Permission denied" in result.output
    )
    assert not (parent / "out").exists()


def test_safety_outdir_that_is_a_file(tmp_path, mixed_result):
    target = tmp_path / "out"
    target.write_text("not a folder")
    with pytest.raises(PipelineError, match=r"\[E208\].*not a directory"):
        mixed_result.write(target)
    assert target.read_text() == "not a folder" and [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("missing", ["everything", "weights", "corrupt"])
def test_safety_missing_model_files(tmp_path, missing):
    heads = tmp_path / "heads"
    heads.mkdir()
    if missing != "everything":
        shutil.copy(ROOT / "models" / "cx-heads" / "config.json", heads)
    if missing == "corrupt":
        (heads / "heads.safetensors").write_bytes(b"\x00" * 64)
    src = tmp_path / "in.jsonl"
    src.write_text(SMALL)
    result = invoke("analyze", str(src), "-o", str(tmp_path / "o"), "-q", "--set", f"models.heads={heads}")
    assert result.exit_code == 1
    assert ("[E201] Model" if missing == "everything" else "[E202] Model folder") in result.output and str(
        heads
    ) in result.output
    assert not (tmp_path / "o").exists()


def test_safety_gpu_out_of_memory_says_what_to_do(tmp_path, monkeypatch, previous_run):
    import torch

    import cxnlp.pipeline as pipeline

    def oom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)"
        )

    monkeypatch.setattr(pipeline, "encode", oom)
    out, marker = previous_run
    src = tmp_path / "in.jsonl"
    src.write_text(SMALL)
    result = invoke("analyze", str(src), "-o", str(out), "-q", "--set", "models.batch_size=256")
    assert result.exit_code == 1
    assert "[E214] Out of memory in step 'embed' on device 'cpu' (CUDA out of memory." in result.output
    assert "Lower models.batch_size (now 256), e.g. --set models.batch_size=64" in result.output
    assert_untouched(out, marker)
    # On a GPU the message also offers the CPU.
    with pytest.raises(ModelError, match=r"--set models.batch_size=32, or run on the CPU with --device cpu"):
        pipeline._raise_if_out_of_memory(
            torch.cuda.OutOfMemoryError("CUDA out of memory"), "embed", "cuda:0", 128
        )
    with pytest.raises(ModelError, match=r"\[E214\]"):
        pipeline._raise_if_out_of_memory(RuntimeError("MPS backend out of memory"), "embed", "mps", 128)
    pipeline._raise_if_out_of_memory(
        RuntimeError("something else"), "embed", "cuda:0", 128
    )  # not OOM: no error


@pytest.mark.parametrize("where", ["segment", "write", "swap"])
def test_safety_interrupted_run_keeps_the_previous_run(tmp_path, monkeypatch, previous_run, where):
    import cxnlp.output as output
    import cxnlp.pipeline as pipeline

    def interrupt(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    if where == "segment":
        monkeypatch.setattr(pipeline, "segment_documents", interrupt)
    elif where == "write":
        monkeypatch.setattr(output, "write_rejects", interrupt)
    else:  # between moving the old run aside and moving the new one in
        real = os.replace

        def replace(src, dst):  # type: ignore[no-untyped-def]
            if ".partial-" in str(src):
                raise KeyboardInterrupt
            return real(src, dst)

        monkeypatch.setattr(output.os, "replace", replace)
    out, marker = previous_run
    src = tmp_path / "in.jsonl"
    src.write_text(SMALL)
    result = invoke("analyze", str(src), "-o", str(out), "-q")
    assert result.exit_code == 130
    assert "[E215] Interrupted before cxnlp finished" in result.output
    monkeypatch.undo()
    assert_untouched(out, marker)


def test_safety_a_killed_run_is_cleaned_up_by_the_next(tmp_path, mixed_result):
    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "out"
    # Killed after moving the previous run aside: OUTDIR is missing, the old run is hidden.
    old = tmp_path / f".out.old-{dead.pid}"
    old.mkdir()
    (old / MARKER).write_text('{"previous": true}')
    partial = tmp_path / f".out.partial-{dead.pid}-abc123"
    partial.mkdir()
    (partial / "documents.parquet").write_bytes(b"half")
    from cxnlp.output import _recover

    _recover(out)
    assert (out / MARKER).read_text() == '{"previous": true}' and not partial.exists() and not old.exists()
    mixed_result.write(out)
    assert json.loads((out / MARKER).read_text())["status"] == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_safety_max_rejects(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(SMALL + '{"id": "s3", "text": ""}\nnot json\n')
    result = invoke("analyze", str(src), "-o", str(tmp_path / "o"), "-q", "--max-rejects", "1")
    assert result.exit_code == 1
    assert (
        "[E212] 2 of 4 input records were rejected, more than input.max_rejects allows (1)" in result.output
        and "--max-rejects" in result.output
    )
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["rejects.jsonl", "run.json"]
    manifest = json.loads((tmp_path / "o" / "run.json").read_text())
    assert (
        manifest["status"] == "failed"
        and manifest["counts"]["rejected"] == 2
        and "embed" not in manifest["timings"]
    )
    assert len((tmp_path / "o" / "rejects.jsonl").read_text().splitlines()) == 2
    ok = invoke("analyze", str(src), "-o", str(tmp_path / "o2"), "-q", "--max-rejects", "0.5")
    assert ok.exit_code == 0, ok.output
    bad = invoke("analyze", str(src), "-o", str(tmp_path / "o3"), "-q", "--max-rejects", "1.5")
    assert bad.exit_code == 2 and "[E002] Config value for 'input.max_rejects'" in bad.output


def test_safety_errors_are_all_documented():
    doc = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    for code in ("E212", "E213", "E214", "E215", "R010", "R011"):
        assert f"| {code} |" in doc
    assert "| 130 |" in doc


def test_safety_page_is_linked():
    assert (
        "data-safety.md" in (ROOT / "docs" / "index.md").read_text()
        and "data-safety.md" in (ROOT / "README.md").read_text()
    )
    assert FIXTURES.is_dir()
