"""The registries of named choices (engine/settings.py, engine/format/registry.py) and
what reads them: the CLI's choices, the Codec's checks, the Pillow plugin's options,
the bench scripts' flags."""
import importlib

import pytest
from PIL import Image

from engine import settings
from engine.format import bitstream, registry

REGISTRIES = {
    "backend": settings.available_backends,
    "kernels": settings.available_kernels,
    "coder": settings.available_coders,
    "precision": settings.available_precisions,
    "compile": settings.available_compile_modes,
    "entropy_pool": settings.available_entropy_pools,
    "entropy": settings.available_entropy_modes,
    "metric": settings.available_metrics,
    "search_precision": settings.available_search_precisions,
}


def test_every_codec_choice_has_a_registry():
    assert set(REGISTRIES) == set(settings.CODEC_CHOICES)
    for kind, available in REGISTRIES.items():
        assert available() == settings.CHOICES[kind] == settings.available(kind)
    with pytest.raises(KeyError, match="not a named choice"):
        settings.available("colour")


def test_entropy_modes_and_coders_have_their_formats():
    modes = set(settings.available_entropy_modes()) | set(settings.ALIASES["entropy"])
    assert modes == set(bitstream.ENTROPY_NAMES)
    for name in settings.available_entropy_modes():
        assert registry.for_encode(bitstream.ENTROPY_NAMES[name]).entropy == bitstream.ENTROPY_NAMES[name]
    coders = {f.coder for f in registry.FORMATS.values()}
    assert coders == set(settings.available_coders()) - {"auto"}
    assert registry.available_formats() == [f.name for f in registry.FORMATS.values()]


def test_check():
    assert settings.check("backend", " Torch ") == "torch"
    assert settings.check("entropy", "raw") == "raw"          # an alias: accepted, not listed
    with pytest.raises(ValueError, match=r"coder/ENGINE_CODER must be one of \('auto', 'native', 'triton'\)"):
        settings.check("coder", "cuda", "coder/ENGINE_CODER")
    with pytest.raises(TypeError, match="not named choices"):
        settings.check_choices(colour="red")
    assert settings.check_choices(metric=None, precision="FP16") == {"metric": None, "precision": "fp16"}


@pytest.mark.parametrize("kind, bad", [("coder", "cuda"), ("precision", "int4"), ("compile", "max"),
                                       ("metric", "psnr"), ("entropy", "zip"), ("backend", "tpu")])
def test_codec_checks_each_choice_before_loading(kind, bad):
    import engine
    with pytest.raises(ValueError, match=f"{kind} must be one of"):
        engine.Codec(**{kind: bad}, root="/nonexistent")      # nothing is loaded: the root is never read


def test_cli_choices_are_the_registries():
    from engine.__main__ import _parser
    sub = next(a for a in _parser()._actions if a.dest == "cmd")
    for cmd in ("compress", "decompress"):
        flags = {a.dest: a.choices for a in sub.choices[cmd]._actions if a.choices is not None}
        for kind in ("backend", "kernels", "coder", "precision", "compile", "entropy_pool"):
            assert tuple(flags[kind]) == REGISTRIES[kind]()
    flags = {a.dest: a.choices for a in sub.choices["compress"]._actions}
    assert tuple(flags["entropy"]) == settings.available_entropy_modes()
    assert tuple(flags["metric"]) == settings.available_metrics()


def test_pillow_plugin_checks_its_options_by_the_registries(tmp_path):
    from engine import pillow_plugin
    with pytest.raises(ValueError, match="backend must be one of"):
        pillow_plugin.register(backend="tpu")
    pillow_plugin.register()
    target = tmp_path / "x.hnlc"
    for option in ({"entropy": "zip"}, {"metric": "psnr"}):
        with pytest.raises(ValueError, match="must be one of"):
            Image.new("RGB", (16, 16)).save(target, **option)
        assert not target.exists()


@pytest.mark.parametrize("script", ["colour_suite", "effort_time", "kodak_models", "peak_rss", "roi", "versus"])
def test_bench_scripts_take_backends_from_the_registry(script, capsys):
    mod = importlib.import_module(f"bench.{script}")
    with pytest.raises(SystemExit):
        mod.main(["--backend", "tpu"])
    err = capsys.readouterr().err
    assert "invalid choice: 'tpu'" in err and all(b in err for b in settings.available_backends())


@pytest.mark.parametrize(("flag", "registry"), [("--precision", "available_precisions"),
                                                ("--kernels", "available_kernels")])
def test_bench_throughput_takes_its_choices_from_the_registries(flag, registry, capsys):
    from bench import throughput
    with pytest.raises(SystemExit):
        throughput.parse_args([flag, "tpu"])
    err = capsys.readouterr().err
    assert "invalid choice: 'tpu'" in err and all(v in err for v in getattr(settings, registry)())


def test_search_precisions_are_the_registrys():
    from engine.net import search
    assert set(search.PRECISIONS) == set(settings.available_search_precisions()) - {"auto"}
