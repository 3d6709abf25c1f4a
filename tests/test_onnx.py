"""The encoder backends: ONNX Runtime (fused fp32, int8 dynamic and static) and torch bfloat16 on AMX or AVX512-BF16
CPUs against torch fp32, batch independence, fallbacks, and the config keys."""

from __future__ import annotations

import inspect
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from cxnlp import models
from cxnlp.config import ModelsConfig, load_config
from cxnlp.errors import ConfigError
from cxnlp.models import OnnxUnavailable, encode, load_encoder, resolve_backend

SENTENCES = [
    "My parcel arrived two weeks late and the box was crushed.",
    "Support sorted out the double charge in five minutes, thank you!",
    "ok",
    "The app keeps logging me out whenever I try to change my delivery address, which is very annoying.",
    "Great value.",
]


@pytest.fixture(scope="module")
def torch_embeddings() -> np.ndarray:
    return encode(load_encoder(None, "cpu", "torch"), SENTENCES)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_onnx_fp32_embeddings_equal_torch(torch_embeddings):
    pytest.importorskip("onnxruntime")
    encoder = load_encoder(None, "cpu", "onnx", "none")
    assert isinstance(encoder, models.OnnxEncoder) and models.encoder_backend(encoder) == "onnx"
    emb = encode(encoder, SENTENCES)
    assert emb.dtype == np.float32 and emb.shape == torch_embeddings.shape
    assert _cosine(emb, torch_embeddings).min() > 0.9999
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)


def test_onnx_int8_embeddings_stay_close_to_torch(torch_embeddings):
    pytest.importorskip("onnxruntime")
    encoder = load_encoder(None, "cpu", "onnx", "int8")
    assert models.encoder_backend(encoder) == "onnx-int8"
    cos = _cosine(encode(encoder, SENTENCES), torch_embeddings)
    assert cos.min() > 0.95 and cos.mean() > 0.98


def _compositions(encoder) -> float:  # type: ignore[no-untyped-def]
    """Largest absolute difference of the same texts' embeddings across three batch compositions."""
    whole = encode(encoder, SENTENCES, batch_size=8)
    split = np.concatenate([encode(encoder, SENTENCES[:2]), encode(encoder, SENTENCES[2:])])
    single = np.concatenate([encode(encoder, [s], batch_size=1) for s in SENTENCES])
    return float(max(np.abs(whole - split).max(), np.abs(whole - single).max()))


@pytest.mark.parametrize("quantize", ["none", "int8-static"])
def test_onnx_embeddings_do_not_depend_on_the_batch(quantize):
    # cxnlp runs in chunks and on Ray actors: a segment's embedding must not depend on its neighbours.
    pytest.importorskip("onnxruntime")
    encoder = load_encoder(None, "cpu", "onnx", quantize)
    assert _compositions(encoder) <= 1e-4


def test_onnx_int8_static_stays_close_to_torch_and_is_cached_by_recipe(torch_embeddings):
    pytest.importorskip("onnxruntime")
    encoder = load_encoder(None, "cpu", "onnx", "int8-static")
    assert models.encoder_backend(encoder) == "onnx-int8-static"
    assert encoder.path.name == "model.int8-static.onnx"
    assert models.ONNX_RECIPE in models.runtime_key("onnx", "int8-static", "cpu")
    cos = _cosine(encode(encoder, SENTENCES), torch_embeddings)
    assert cos.min() > 0.93 and cos.mean() > 0.97  # 0.989 mean on the 2,650 sample segments


def test_onnx_calibration_is_deterministic_and_unpadded():
    from tokenizers import Tokenizer

    path = models.encoder_location(None) + "/tokenizer.json"
    first = models.calibration_windows(Tokenizer.from_file(path))
    again = models.calibration_windows(Tokenizer.from_file(path))
    assert np.array_equal(first, again) and first.shape[1] == models.CALIBRATION_WINDOW
    assert len(first) >= 30 and not (first == 0).any()  # [PAD] is id 0


def test_onnx_runtime_key_names_the_runtime(monkeypatch):
    monkeypatch.setattr(models, "onnxruntime_available", lambda: True)
    monkeypatch.setattr(models, "bf16_units_available", lambda: False)
    keys = {
        models.runtime_key("auto", "none", "cpu"),
        models.runtime_key("auto", "int8", "cpu"),
        models.runtime_key("onnx", "int8-static", "cpu"),
        models.runtime_key("torch", "none", "cpu"),
        models.runtime_key("auto", "none", "cuda"),
    }
    monkeypatch.setattr(models, "bf16_units_available", lambda: True)
    keys.add(models.runtime_key("auto", "none", "cpu"))
    assert len(keys) == 6
    assert models.runtime_key("torch-bf16", "none", "cpu") == f"torch-bf16-{models.BF16_RECIPE}"
    assert models.runtime_key("onnx", "none", "cpu").startswith("onnx-none")  # onnx when asked for


def test_onnx_encode_restores_input_order_and_handles_edge_cases():
    pytest.importorskip("onnxruntime")
    encoder = load_encoder(None, "cpu", "onnx", "none")
    together = encoder.encode(SENTENCES, batch_size=2, normalize_embeddings=True)
    one_by_one = np.stack([encoder.encode(s, normalize_embeddings=True) for s in SENTENCES])
    assert _cosine(together, one_by_one).min() > 0.9999
    assert encode(encoder, []).shape == (0, 384)
    long_text = "word " * 2000  # truncated at the encoder's 256 tokens, like sentence-transformers
    assert encode(encoder, [long_text]).shape == (1, 384)


def test_cxnlp_encoders_batch_the_whole_list_and_report_progress_by_batch(monkeypatch):
    # models.encode hands cxnlp's own CPU encoders every text at once: cut into pieces, each piece was
    # sorted apart and ended in part-filled batches (bf16: 1.65x the real tokens computed, 1.31x whole)
    pytest.importorskip("onnxruntime")
    encoder = load_encoder(None, "cpu", "onnx", "none")
    texts = [
        f"Order {i} took {i % 9 + 2} days and the courier {'never ' * (i % 4)}called." for i in range(300)
    ]
    calls: list[int] = []
    pool = encoder._pool
    monkeypatch.setattr(
        encoder,
        "_pool",
        lambda t, out, size, progress=None: (calls.append(len(t)), pool(t, out, size, progress)),
    )
    ticks: list[int] = []
    emb = encode(encoder, texts, batch_size=16, progress=ticks.append)
    assert calls == [300]
    assert ticks == [16] * 18 + [12]  # one tick per batch, every text counted once
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    one_by_one = np.stack([encoder.encode(t, normalize_embeddings=True) for t in texts[::50]])
    assert _cosine(emb[::50], one_by_one).min() > 0.9999
    # an in-memory run of millions of segments is cut into pieces of FOLDER_PIECE texts, in order
    calls.clear()
    monkeypatch.setattr(models, "FOLDER_PIECE", 128)
    pieces = encode(encoder, texts, batch_size=16)
    assert calls == [128, 128, 44] and _cosine(pieces, emb).min() > 0.9999


def test_onnx_missing_onnxruntime_falls_back_to_torch(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    monkeypatch.setattr(models, "bf16_units_available", lambda: False)
    assert not models.onnxruntime_available()
    with caplog.at_level(logging.INFO, logger="cxnlp.models"):
        assert resolve_backend("auto", "cpu") == "torch"
        assert resolve_backend("onnx", "cpu") == "torch"
    assert "onnxruntime is not installed; using torch" in caplog.text
    sentinel = object()
    monkeypatch.setattr(models, "_load_torch_encoder", lambda name, location, device: sentinel)
    assert load_encoder.__wrapped__(None, "cpu", "onnx", "int8") is sentinel


def test_onnx_backend_choice_by_device(monkeypatch, caplog):
    monkeypatch.setattr(models, "onnxruntime_available", lambda: True)
    monkeypatch.setattr(models, "bf16_units_available", lambda: False)
    assert resolve_backend("auto", "cpu") == "onnx"
    assert resolve_backend("torch", "cpu") == "torch"
    assert resolve_backend("auto", "cuda") == "torch" and resolve_backend("auto", "mps") == "torch"
    with caplog.at_level(logging.WARNING, logger="cxnlp.models"):
        assert resolve_backend("onnx", "cuda:0") == "torch"
    assert "runs on the CPU only" in caplog.text
    with pytest.raises(ValueError, match="valid: auto, torch, onnx, torch-bf16"):
        resolve_backend("tensorrt", "cpu")


def test_bf16_backend_choice(monkeypatch, caplog):
    monkeypatch.setattr(models, "onnxruntime_available", lambda: True)
    monkeypatch.setattr(models, "bf16_units_available", lambda: True)
    assert resolve_backend("auto", "cpu") == "torch-bf16" == resolve_backend("torch-bf16", "cpu")
    assert resolve_backend("onnx", "cpu") == "onnx" and resolve_backend("torch", "cpu") == "torch"
    with caplog.at_level(logging.WARNING, logger="cxnlp.models"):
        assert resolve_backend("auto", "cuda") == "torch"
        assert resolve_backend("torch-bf16", "cuda") == "torch"
    assert "backend torch-bf16 runs on the CPU only" in caplog.text
    # no bfloat16 units: emulated bf16 would be slow
    monkeypatch.setattr(models, "bf16_units_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="cxnlp.models"):
        assert resolve_backend("torch-bf16", "cpu") == "onnx"
    assert "no bfloat16 units (AMX or AVX512-BF16)" in caplog.text


def test_bf16_units_can_be_turned_off(monkeypatch):
    monkeypatch.delenv("CXNLP_NO_AMX", raising=False)
    monkeypatch.setenv("CXNLP_NO_BF16", "1")
    assert models.bf16_units_available.__wrapped__() is False
    monkeypatch.delenv("CXNLP_NO_BF16")
    monkeypatch.setenv("CXNLP_NO_AMX", "1")  # the older name
    assert models.bf16_units_available.__wrapped__() is False


needs_bf16_units = pytest.mark.skipif(
    not models.bf16_units_available(), reason="needs a CPU with bfloat16 units (AMX or AVX512-BF16)"
)


@pytest.fixture(scope="module")
def bf16_encoder():
    if not models.bf16_units_available():
        pytest.skip("needs a CPU with bfloat16 units (AMX or AVX512-BF16)")
    encoder = load_encoder(None, "cpu", "torch-bf16")
    assert isinstance(encoder, models.Bf16Encoder) and models.encoder_backend(encoder) == "torch-bf16"
    return encoder


@needs_bf16_units
def test_bf16_embeddings_stay_close_to_torch(bf16_encoder, torch_embeddings):
    emb = encode(bf16_encoder, SENTENCES)
    assert emb.dtype == np.float32 and emb.shape == torch_embeddings.shape
    assert _cosine(emb, torch_embeddings).min() > 0.999  # 0.99998 mean on the 2,650 sample segments
    assert not np.array_equal(emb, torch_embeddings)  # bfloat16 products, not fp32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)


@needs_bf16_units
def test_bf16_embeddings_are_identical_whatever_the_batch(bf16_encoder):
    # Not just close: bit for bit, across neighbours, positions, call sizes and thread counts.
    import torch

    texts = SENTENCES + [
        f"Order {i} took {i % 9 + 2} days and the courier {'never ' * (i % 4)}called." for i in range(90)
    ]
    whole = encode(bf16_encoder, texts)
    assert _compositions(bf16_encoder) == 0.0
    shuffled = np.random.default_rng(0).permutation(len(texts))
    assert np.array_equal(encode(bf16_encoder, [texts[i] for i in shuffled]), whole[shuffled])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = np.stack([bf16_encoder.encode(t, normalize_embeddings=True) for t in texts[::13]])
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(alone, whole[::13])


def test_bf16_batches_have_fixed_shapes():
    lengths = np.array([3, 17, 16, 40, 2, 33, 16, 1, 24, 25, 48, 49, 95, 97, 256] * 20)
    seen = []
    for idx, width in models.Bf16Encoder.batches(lengths):
        assert 0 < len(idx) <= models.BF16_ROWS
        # the width depends on each segment's own length only: rounded up to its length's step
        assert {int(w) for w in models.Bf16Encoder.widths(lengths[idx])} == {width}
        seen.extend(idx.tolist())
    assert sorted(seen) == list(range(len(lengths)))
    # steps of 2 up to 24 tokens, 4 up to 48, 8 up to 96, 16 beyond
    got = models.Bf16Encoder.widths(np.array([1, 2, 3, 24, 25, 27, 48, 49, 95, 97, 256]))
    assert got.tolist() == [2, 2, 4, 24, 28, 28, 48, 56, 96, 112, 256]


@needs_bf16_units
def test_bf16_encode_handles_edge_cases(bf16_encoder):
    assert encode(bf16_encoder, []).shape == (0, 384)
    long_text = "word " * 2000  # truncated at the encoder's 256 tokens, like sentence-transformers
    assert encode(bf16_encoder, [long_text, "ok"]).shape == (2, 384)
    assert bf16_encoder.encode("ok").shape == (384,)


@needs_bf16_units
def test_bf16_progress_counts_each_fixed_shape_batch(bf16_encoder):
    texts = SENTENCES * 30
    ticks: list[int] = []
    emb = encode(bf16_encoder, texts, progress=ticks.append)
    lengths = np.array([len(e.ids) for e in bf16_encoder.tokenizer.encode_batch(texts)])
    # once a batch, in the order the streams finish them
    assert sorted(ticks) == sorted(len(idx) for idx, _ in models.Bf16Encoder.batches(lengths))
    assert sum(ticks) == len(texts) and np.array_equal(emb[:5], encode(bf16_encoder, SENTENCES))


@needs_bf16_units
def test_bf16_streams_give_the_same_embeddings(bf16_encoder):
    # One stream per torch thread: 1, 2 and 3 streams (more than this VM's cores) give the same bits, and
    # the caller's thread count is restored.
    import torch

    texts = SENTENCES + [f"Ticket {i}: the {'app ' * (i % 7)}crashed after {i} minutes." for i in range(150)]
    threads = torch.get_num_threads()
    got = {}
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            got[n] = encode(bf16_encoder, texts)
            assert torch.get_num_threads() == n
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(got[1], got[2]) and np.array_equal(got[1], got[3])


@needs_bf16_units
def test_bf16_stream_failure_reaches_the_caller(bf16_encoder, monkeypatch):
    import threading

    import torch

    calls = []
    real = models.Bf16Encoder._batch

    def flaky(self, idx, *args):  # type: ignore[no-untyped-def]
        calls.append(len(idx))
        if len(calls) == 2:
            raise MemoryError("no room for this batch")
        return real(self, idx, *args)

    monkeypatch.setattr(models.Bf16Encoder, "_batch", flaky)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(MemoryError, match="no room"):
            encode(bf16_encoder, [f"review number {i} " * (i % 30 + 1) for i in range(400)])
        assert torch.get_num_threads() == 2  # restored, and no stream is left running
        assert not [t for t in threading.enumerate() if t.name.startswith("cxnlp-bf16")]
    finally:
        torch.set_num_threads(threads)


def test_onnx_export_failure_falls_back_to_torch(monkeypatch, caplog):
    def unavailable(location, quantize):
        raise OnnxUnavailable("exporting needs onnx (pip install onnx)")

    monkeypatch.setattr(models, "onnxruntime_available", lambda: True)
    monkeypatch.setattr(models, "bf16_units_available", lambda: False)
    monkeypatch.setattr(models.OnnxEncoder, "load", staticmethod(unavailable))
    monkeypatch.setattr(models, "_load_torch_encoder", lambda name, location, device: "torch-model")
    with caplog.at_level(logging.WARNING, logger="cxnlp.models"):
        assert load_encoder.__wrapped__(None, "cpu", "auto", "int8") == "torch-model"
    assert "ONNX backend unavailable (exporting needs onnx" in caplog.text


def test_onnx_only_mean_pooling_encoders_are_exported(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "modules.json").write_text(
        json.dumps(
            [
                {"type": "sentence_transformers.models.Transformer", "path": ""},
                {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"},
            ]
        )
    )
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    with pytest.raises(OnnxUnavailable, match="mean pooling"):
        models.onnx_model_path(str(tmp_path))


def test_onnx_config_keys_are_validated():
    config = load_config(overrides=["models.backend=torch", "models.quantize=none"])
    assert config.models.backend == "torch" and config.models.quantize == "none"
    assert load_config(overrides=["models.quantize=int8-static"]).models.quantize == "int8-static"
    with pytest.raises(ConfigError, match=r"\[E002\] Config value for 'models.backend' is invalid"):
        load_config(overrides=["models.backend=tensorrt"])
    with pytest.raises(ConfigError, match=r"\[E002\] Config value for 'models.quantize' is invalid"):
        load_config(overrides=["models.quantize=fp16"])


def test_onnx_load_encoder_defaults_match_the_config_defaults():
    # The pipeline calls load_encoder(name, device): its defaults are what a default run gets.
    params = inspect.signature(load_encoder.__wrapped__).parameters
    assert params["backend"].default == ModelsConfig().backend == "auto"
    assert params["quantize"].default == ModelsConfig().quantize


def test_onnx_unwritable_cache_falls_back_to_torch(monkeypatch, tmp_path, caplog):
    pytest.importorskip("onnxruntime")
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("CXNLP_CACHE", str(blocker))
    monkeypatch.setattr(models, "_load_torch_encoder", lambda name, location, device: "torch-model")
    with caplog.at_level(logging.WARNING, logger="cxnlp.models"):
        assert load_encoder.__wrapped__(None, "cpu", "onnx", "none") == "torch-model"
    assert "could not export to" in caplog.text


def _bert_inputs(batch: int, width: int, seed: int):  # type: ignore[no-untyped-def]
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (batch, width), generator=g)
    mask = torch.ones(batch, width, dtype=torch.long)
    for row in range(batch):
        n = int(torch.randint(1, width + 1, (), generator=g))
        ids[row, n:], mask[row, n:] = 0, 0
    return ids, mask


def test_plain_torch_bert_computes_what_transformers_does():
    """cxnlp.bert replaces transformers' BertModel in the bf16 runtime (4 s less start-up): the hidden
    states of every real token are the same bit for bit, in float32 and under bfloat16 autocast."""
    import torch
    from transformers import AutoModel

    from cxnlp import bert

    location = models.encoder_location(None)
    ours = bert.load(location)
    theirs = AutoModel.from_pretrained(location).eval()
    assert ours is not None
    for batch, width, seed in ((64, 24, 0), (3, 17, 1)):
        ids, mask = _bert_inputs(batch, width, seed)
        real = mask.bool()
        with torch.inference_mode():
            full = ours(ids, mask)
            assert torch.equal(full[real], theirs(input_ids=ids, attention_mask=mask)[0][real])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                a, b = ours(ids, mask), theirs(input_ids=ids, attention_mask=mask)[0]
            assert torch.equal(a[real], b[real])
            assert not torch.equal(a[real], full[real])  # the products did run in bfloat16


def test_plain_torch_bert_declines_what_it_does_not_implement(tmp_path):
    import shutil

    from cxnlp import bert

    location = Path(models.encoder_location(None))
    config = json.loads((location / "config.json").read_text())
    assert bert.supported(config)
    for change in (
        {"model_type": "roberta"},
        {"hidden_act": "relu"},
        {"position_embedding_type": "relative_key"},
    ):
        assert not bert.supported({**config, **change})
    # another architecture, or no single safetensors file: None, and the caller uses transformers
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    assert bert.load(other) is None
    shutil.copy(location / "config.json", tmp_path / "config.json")
    assert bert.load(tmp_path) is None
    # a BERT config with the wrong weights is an error, not a silently random model
    import torch
    from safetensors.torch import save_file

    save_file({"embeddings.word_embeddings.weight": torch.zeros(4, 4)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="not a BERT checkpoint"):
        bert.load(tmp_path)


def test_bf16_encoder_does_not_import_transformers():
    """Start-up: the bf16 runtime loads the packaged encoder without importing transformers."""
    import subprocess

    code = (
        "import sys; from cxnlp import models; "
        "enc = models.Bf16Encoder.load(None, models.encoder_location(None)); "
        "print(enc.encode('the parcel came late').shape, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["(384,)", "False"]


def test_the_cli_quiets_transformers_without_importing_it():
    import os
    import subprocess

    code = (
        "import sys, os; from cxnlp import cli; cli._quiet_libraries(); "
        "print('transformers' in sys.modules, os.environ['TRANSFORMERS_VERBOSITY'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_VERBOSITY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["False", "error"]
