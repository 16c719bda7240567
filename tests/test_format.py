"""The format wing's registry and interface (engine/format/), the settings module and
the Codec's per-call choices: small tests beside what they test."""
import numpy as np
import pytest

import engine
from engine import settings
from engine.format import MAGIC, bitstream, registry
from engine.format.registry import FORMATS

IMG = (np.random.default_rng(5).random((40, 56, 3)) * 255).astype(np.uint8)


def test_every_format_has_the_interface():
    for f in FORMATS.values():
        for name in ("finish", "to_host", "serialize", "parse", "to_device"):
            assert callable(getattr(f, name)), (f.name, name)
        assert isinstance(f.host_entropy, bool) and f.upload and f.coder in ("native", "triton")
    assert registry.available_formats() == ["v1-raw", "v1-context", "v2-lanes", "v2-lanes-triton"]


@pytest.mark.parametrize("entropy,coder,name", [
    (bitstream.ENTROPY_RAW, "native", "v1-raw"), (bitstream.ENTROPY_CONTEXT, "native", "v1-context"),
    (bitstream.ENTROPY_RANS, "native", "v2-lanes"), (bitstream.ENTROPY_RANS, "triton", "v2-lanes-triton"),
    (bitstream.ENTROPY_CONTEXT, "triton", "v1-context"),      # version 1 has only the CPU's coder
])
def test_encode_picks_by_entropy_and_coder(entropy, coder, name):
    assert registry.for_encode(entropy, coder).name == name


@pytest.mark.parametrize("entropy", ["rans", "context", "none"])
@pytest.mark.parametrize("coder", ["native", "triton"])
def test_decode_picks_by_header(tiny_root, entropy, coder):
    data = engine.Codec(model="tiny", root=tiny_root, entropy=entropy, backend="torch", kernels="torch").compress(IMG)
    assert data[:4] == MAGIC
    hdr = bitstream.peek(data, 10 ** 6)
    fmt = registry.for_header(hdr, coder)
    assert (fmt.version, fmt.entropy) == (hdr.version, hdr.entropy)
    assert fmt.coder == ("triton" if coder == "triton" and hdr.version == bitstream.VERSION_LANES else "native")


def test_env_is_read_only_for_registered_names(monkeypatch):
    monkeypatch.setenv("ENGINE_TILE_SIZE", "1024")
    assert settings.tile_size_setting() == 1024 and settings.tile_size_setting(512) == 512
    with pytest.raises(KeyError, match="not an engine setting"):
        settings.env("ENGINE_NOT_A_KNOB")


def test_per_call_quality_and_effort(tiny_root):
    kw = dict(model="tiny", root=tiny_root, backend="torch", kernels="torch")
    codec = engine.Codec(quality=1, **kw)
    assert codec.compress(IMG, quality=3) == engine.Codec(quality=3, **kw).compress(IMG)
    assert codec.compress(IMG, effort=1) == engine.Codec(quality=1, effort=1, **kw).compress(IMG)
    assert codec.compress_batch([IMG, IMG], quality=2) == [engine.Codec(quality=2, **kw).compress(IMG)] * 2
    assert codec.settings().effort == 0 and codec.settings(2).effort == 2
    with pytest.raises(ValueError, match="exclude each other"):
        codec.compress(IMG, quality=2, max_bytes=1000)


def test_runner_lifecycle(tiny_root):
    codec = engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch")
    r = codec.runner
    assert r.profiles is None and r.precision == "fp32" and not r.closed
    with r:
        pass
    assert r.closed
    r.close()       # twice is fine
