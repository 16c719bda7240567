"""Entropy coding in worker processes (engine/runtime/entropy_pool.py): same bytes, same errors."""
import numpy as np
import pytest

import engine
from engine.runtime import entropy_pool
from engine.timing import StageTimer


def test_resolve_kind(monkeypatch):
    monkeypatch.delenv("ENGINE_ENTROPY_POOL", raising=False)
    monkeypatch.setattr(entropy_pool.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(entropy_pool, "spawn_safe", lambda: True)
    assert entropy_pool.resolve_kind(None, on_cuda=True) == "processes"
    assert entropy_pool.resolve_kind(None, on_cuda=False) == "threads"
    assert entropy_pool.resolve_kind(None, on_cuda=True, gil_free=True) == "threads"   # the native v2 coder
    monkeypatch.setattr(entropy_pool, "spawn_safe", lambda: False)  # a plain script: maybe unguarded
    assert entropy_pool.resolve_kind(None, on_cuda=True) == "threads"
    monkeypatch.setattr(entropy_pool, "spawn_safe", lambda: True)
    monkeypatch.setattr(entropy_pool.os, "cpu_count", lambda: 2)
    assert entropy_pool.resolve_kind("auto", on_cuda=True) == "threads"
    assert entropy_pool.resolve_kind("processes", on_cuda=False) == "processes"
    monkeypatch.setenv("ENGINE_ENTROPY_POOL", "processes")
    assert entropy_pool.resolve_kind(None, on_cuda=False) == "processes"
    with pytest.raises(ValueError):
        entropy_pool.resolve_kind("fibers", on_cuda=False)


def test_codec_rejects_unknown_pool(tiny_root):
    with pytest.raises(ValueError, match="entropy_pool"):
        engine.Codec(model="tiny", root=tiny_root, backend="torch", entropy_pool="fibers")


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_process_pool_same_bytes_and_errors(tiny_root):
    rng = np.random.default_rng(5)
    imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(40, 56), (40, 56), (17, 33), (64, 64)]]
    ref = engine.Codec(model="tiny", root=tiny_root, backend="torch", quality=2, entropy_pool="threads")
    single = [ref.compress(x) for x in imgs]
    with engine.Codec(model="tiny", root=tiny_root, backend="torch", quality=2, entropy_pool="processes") as codec:
        codec.timer = StageTimer()
        out = codec.compress_batch([imgs[0], np.zeros((2, 2), np.float64), *imgs[1:]], batch_size=2,
                                   errors="return", workers=2)
        assert isinstance(out[1], engine.ImageError)
        assert [out[0], *out[2:]] == single
        assert any(s["stage"] == "entropy" and s["lane"].startswith("cpu:process-") for s in codec.timer.spans())
        pids = codec.worker_pids()
        assert len(pids) == 2
        dec = codec.decompress_batch([single[0], b"HNLC junk", *single[1:]], batch_size=2, errors="return",
                                     workers=2)
        assert codec.worker_pids() == pids  # reused, not restarted
        assert codec.compress_batch(imgs[:1], workers=1) == single[:1]
        new = codec.worker_pids()
        assert len(new) == 1 and not set(new) & set(pids)  # resized: restarted
        assert isinstance(dec[1], engine.BitstreamError)
        for d, b in zip([dec[0], *dec[2:]], single):
            np.testing.assert_array_equal(d, ref.decompress(b))
    assert codec.worker_pids() == []  # closed by the with block
    assert not any(_alive(p) for p in new + pids)


def test_dropping_the_codec_stops_its_workers(tiny_root):
    import gc
    import time

    codec = engine.Codec(model="tiny", root=tiny_root, backend="torch", quality=2, entropy_pool="processes")
    img = np.random.default_rng(6).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert codec.compress_batch([img], workers=1) == [codec.compress(img)]
    pids = codec.worker_pids()
    assert pids and all(_alive(p) for p in pids)
    del codec
    gc.collect()
    deadline = time.time() + 20
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def test_spawn_safe_reads_how_main_was_started(monkeypatch):
    import sys
    import types

    script = types.ModuleType("__main__")
    script.__file__, script.__spec__ = "/tmp/job.py", None          # python job.py
    monkeypatch.setitem(sys.modules, "__main__", script)
    assert not entropy_pool.spawn_safe()
    script.__spec__ = object()                                      # python -m job
    assert entropy_pool.spawn_safe()
    repl = types.ModuleType("__main__")                              # interactive: no file
    monkeypatch.setitem(sys.modules, "__main__", repl)
    assert entropy_pool.spawn_safe()
