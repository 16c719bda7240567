"""Checkpoints: safetensors weights + a JSON file (model config, quality ladder, provenance).

A shipped model lives in ``engine/checkpoints/<name>/``:
  weights.safetensors   the CodecNet state dict (float32)
  model.json            {"config": {...}, "qualities": {"1": {"imp_bias": b, ...}, ...},
                         "provenance": {...}}
The ladder's qualities share weights; each shifts the importance map's last bias
(ModelConfig-independent), which is how one training run yields several rates.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file, save_file

from .. import settings
from ..io.atomic import atomic_write_bytes     # model.json
from .model import CodecNet, ModelConfig

CHECKPOINT_DIR = Path(__file__).parent.parent / "checkpoints"     # engine/checkpoints/
# small16v2: small16's network trained on with a colour (CIELAB) term, so colours hold at
# effort 0 (issue #29).  "small16" and "small" (8 colour codes) stay installed: a file names
# its model, and their files decode as before.  "small16v3" (its colour codes dithered:
# truer flat colours, ~2% more bytes) is installed beside it, not the default: at equal
# rate it is 0.02..0.08 dB behind on the held-out images (README, issue #29).
DEFAULT_MODEL = "small16v2"


def save_weights(net: CodecNet, path: str | os.PathLike, dtype=None) -> None:
    """The state dict as float32, or ``dtype`` (torch.float16: a shipped model stored at
    half the bytes; the engine computes in float32 from the stored values, so files and
    pixels follow the stored weights exactly)."""
    import torch
    sd = {k: v.detach().cpu().contiguous().to(dtype or torch.float32) for k, v in net.state_dict().items()}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(sd, str(tmp))
    os.replace(tmp, path)


@dataclass(frozen=True)
class Quality:
    model: str
    quality: int
    imp_bias: float
    fingerprint: str      # sha256 of the weights file + config + bias; files carry 8 bytes of it
    weights: Path
    config: ModelConfig
    meta: dict


# A model name is one identifier, never a path: a file names its model, and that name
# must not lead outside the models' folder (issue #28).
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
META_MAX_BYTES = 1 << 20      # a model.json is a few KB


def check_model_name(model) -> str:
    """``model`` if it is a model name (1..64 of A-Z a-z 0-9 . _ -, starting with a
    letter or digit), else a ValueError: no path, absolute or relative, is a name."""
    if not isinstance(model, str) or not MODEL_NAME.fullmatch(model):
        raise ValueError(f"{model!r} is not a model name (1..64 letters, digits, '.', '_', '-', "
                         "starting with a letter or digit; a model is named, never given as a path)")
    return model


def list_models(root: str | os.PathLike | None = None) -> list[str]:
    """The models in ``root`` (default: the shipped ones): folders with a model.json."""
    folder = Path(root or CHECKPOINT_DIR)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if MODEL_NAME.fullmatch(p.name) and (p / "model.json").is_file())


def installed(model, root: str | os.PathLike | None = None) -> bool:
    """Whether ``model`` is a model name with a model folder in ``root`` (default: the
    shipped models).  Touches nothing outside ``root``, whatever ``model`` is."""
    return (isinstance(model, str) and bool(MODEL_NAME.fullmatch(model))
            and (Path(root or CHECKPOINT_DIR) / model / "model.json").is_file())


def model_channels(model, root: str | os.PathLike | None = None) -> tuple[int, int, int] | None:
    """(n, m, multiple) of an installed model (what bounds its files' size:
    engine.bitstream.max_file_bytes), or None for a name that is not one."""
    if not installed(model, root):
        return None
    try:
        cfg = ModelConfig.from_dict(_read_meta(Path(root or CHECKPOINT_DIR) / model)["config"])
    except (ValueError, KeyError, TypeError):
        return None
    return cfg.n, cfg.m, cfg.multiple


def model_metric(model: str, root: str | os.PathLike | None = None) -> str:
    return _read_meta(Path(root or CHECKPOINT_DIR) / check_model_name(model)).get("metric", "mse")


def installed_metrics(root: str | os.PathLike | None = None) -> list[str]:
    """The metrics (of :func:`engine.settings.available_metrics`) some installed model is
    trained for."""
    have = {model_metric(m, root) for m in list_models(root)}
    return [m for m in settings.available_metrics() if m in have]


def model_for(metric: str | None = None, model: str | None = None,
              root: str | os.PathLike | None = None) -> str:
    """The model a codec runs: ``model`` when named (its metric must agree with ``metric``
    when both are given), else the default model when it is trained for ``metric``
    (default mse), else the first installed model that is."""
    if metric is not None:
        metric = settings.check("metric", metric)
    if model is not None:
        if metric is not None and model_metric(model, root) != metric:
            raise ValueError(f"model {model!r} is trained for {model_metric(model, root)}, not {metric}")
        return model
    metric = metric or "mse"
    names = list_models(root)
    ordered = ([DEFAULT_MODEL] if DEFAULT_MODEL in names else []) + [m for m in names if m != DEFAULT_MODEL]
    for name in ordered:
        if model_metric(name, root) == metric:
            return name
    raise ValueError(f"no installed model is trained for {metric}; metrics available: {installed_metrics(root)}")


def _read_meta(model_dir: Path) -> dict:
    from ..io.imageio import open_regular
    try:
        with open_regular(model_dir / "model.json") as f:     # not a FIFO, a device, a folder
            raw = f.read(META_MAX_BYTES + 1)
    except OSError as e:
        raise ValueError(f"cannot read {model_dir / 'model.json'}: {e.strerror or e}") from None
    if len(raw) > META_MAX_BYTES:
        raise ValueError(f"{model_dir / 'model.json'} is over {META_MAX_BYTES} bytes: not a model.json")
    return json.loads(raw)


def _weights_path(model_dir: Path, meta: dict) -> Path:
    """The weights file a model.json names: a file name inside the model's folder."""
    name = meta.get("weights", "weights.safetensors")
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise ValueError(f"{model_dir / 'model.json'}: weights must be a file name in the model folder, got {name!r}")
    return model_dir / name


def _encodable(meta: dict) -> list[int]:
    """Rungs that encode: all but the retired ones (``"retired": "why"`` in a rung's
    entry), which still decode the files made with them."""
    return sorted(int(q) for q, v in meta["qualities"].items() if not v.get("retired"))


def qualities(model: str = DEFAULT_MODEL, root: Path | None = None, retired: bool = False) -> list[int]:
    """The qualities a codec encodes with (``retired=True``: every rung, as decoding needs)."""
    meta = _read_meta(Path(root or CHECKPOINT_DIR) / check_model_name(model))
    return sorted(int(q) for q in meta["qualities"]) if retired else _encodable(meta)


_HASHES: dict[tuple, object] = {}


def weights_hasher(path: Path):
    """A sha256 object that has consumed the weights file, read and hashed once per
    process while the file is unchanged (keyed by its resolved path, size and
    modification time): every codec, rung and decode resolves its checkpoint, and a
    shipped file is megabytes.  Returns a copy, for the caller to extend.  Only a
    regular file is read (not a FIFO, or a device such as /dev/zero)."""
    from ..io.imageio import open_regular
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        h = _HASHES.get(key) if stat.S_ISREG(st.st_mode) else None
        if h is None:
            with open_regular(path) as f:        # not a FIFO, a device, a folder
                h = hashlib.sha256()
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            _HASHES[key] = h
    except OSError as e:
        raise ValueError(f"cannot read the weights {path}: {e.strerror or e}") from None
    return h.copy()


def resolve(model: str = DEFAULT_MODEL, quality: int | None = None, root: Path | None = None,
            decode: bool = False) -> Quality:
    """A rung of a model.  Retired rungs resolve only with ``decode=True``.  ``model`` is
    a name (:func:`check_model_name`), looked up in ``root`` (default: the shipped models)."""
    model_dir = Path(root or CHECKPOINT_DIR) / check_model_name(model)
    if not (model_dir / "model.json").exists():
        raise ValueError(f"unknown model {model!r}; {'models in ' + str(root) if root else 'shipped models'}: "
                         f"{list_models(root)}")
    meta = _read_meta(model_dir)
    qs = _encodable(meta)
    if quality is None:
        quality = int(meta.get("default_quality", qs[len(qs) // 2]))
    if str(quality) in meta["qualities"] and meta["qualities"][str(quality)].get("retired") and not decode:
        raise ValueError(f"model {model!r} quality {quality} is retired ({meta['qualities'][str(quality)]['retired']}); "
                         f"it still decodes its files; encode with one of {qs}")
    if str(quality) not in meta["qualities"] or not isinstance(quality, int):
        raise ValueError(f"model {model!r} has qualities {qs}, not {quality!r}")
    qmeta = meta["qualities"][str(quality)]
    weights = _weights_path(model_dir, meta)
    cfg = ModelConfig.from_dict(meta["config"])
    h = weights_hasher(weights)
    h.update(cfg.to_json().encode())
    h.update(repr(float(qmeta["imp_bias"])).encode())
    return Quality(model, quality, float(qmeta["imp_bias"]), h.hexdigest(), weights, cfg, qmeta)


def model_fingerprint(model: str, root: Path | None = None) -> str:
    """SHA-256 of a model's files as the codec uses them (model.json, weights, entropy
    tables): what the CLI's records tie a compressed output to, beside its input."""
    model_dir = Path(root or CHECKPOINT_DIR) / check_model_name(model)
    meta = _read_meta(model_dir)
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    h.update(weights_hasher(_weights_path(model_dir, meta)).digest())
    if (model_dir / "entropy.safetensors").is_file():
        h.update(weights_hasher(model_dir / "entropy.safetensors").digest())
    return h.hexdigest()


def load_net(q: Quality) -> CodecNet:
    net = CodecNet(q.config)
    net.load_state_dict(load_file(str(q.weights)))
    net.encoder.shift_importance(q.imp_bias)
    return net.eval()


def write_model_dir(model_dir: str | os.PathLike, net: CodecNet, qualities_: dict[int, float],
                    provenance: dict | None = None, extra: dict | None = None, dtype=None) -> Path:
    """Write ``weights.safetensors`` (float32, or ``dtype``) + ``model.json`` for a ladder
    {quality: imp_bias}."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    save_weights(net, model_dir / "weights.safetensors", dtype)
    meta = {
        "weights": "weights.safetensors",
        "config": json.loads(net.cfg.to_json()),
        "qualities": {str(k): {"imp_bias": float(v), **((extra or {}).get(k, {}))} for k, v in sorted(qualities_.items())},
        "provenance": provenance or {},
    }
    atomic_write_bytes(model_dir / "model.json", json.dumps(meta, indent=1).encode())
    return model_dir
