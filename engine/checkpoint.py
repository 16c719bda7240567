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
import tempfile
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file, save_file

from .model import CodecNet, ModelConfig

CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"
DEFAULT_MODEL = "small"


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)     # elsewhere: the classic set-and-restore
    os.umask(old)
    return old


def _temp_prefix(name: str, folder: Path) -> str:
    """``.NAME.`` shortened so that the temp name (+ 8 random characters + ``.tmp``) fits
    the folder's file-name limit: an output whose own name fits must not fail on its temp."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    room = max(1, limit - len(".") - len(".") - 8 - len(".tmp"))
    while len(os.fsencode(name)) > room:
        name = name[:-1]
    return f".{name}."


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temp file in the same folder + rename, so readers never see half a file.
    The file gets the mode a plain open() would give it (0666 less the umask), not
    mkstemp's 0600."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name, path.parent), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o666 & ~current_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_weights(net: CodecNet, path: str | os.PathLike) -> None:
    sd = {k: v.detach().cpu().contiguous().float() for k, v in net.state_dict().items()}
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


def list_models() -> list[str]:
    return sorted(p.name for p in CHECKPOINT_DIR.iterdir() if (p / "model.json").exists()) if CHECKPOINT_DIR.exists() else []


def _read_meta(model_dir: Path) -> dict:
    return json.loads((model_dir / "model.json").read_text())


def _encodable(meta: dict) -> list[int]:
    """Rungs that encode: all but the retired ones (``"retired": "why"`` in a rung's
    entry), which still decode the files made with them."""
    return sorted(int(q) for q, v in meta["qualities"].items() if not v.get("retired"))


def qualities(model: str = DEFAULT_MODEL, root: Path | None = None, retired: bool = False) -> list[int]:
    """The qualities a codec encodes with (``retired=True``: every rung, as decoding needs)."""
    meta = _read_meta(Path(root or CHECKPOINT_DIR) / model)
    return sorted(int(q) for q in meta["qualities"]) if retired else _encodable(meta)


_HASHES: dict[tuple, object] = {}


def weights_hasher(path: Path):
    """A sha256 object that has consumed the weights file, read and hashed once per
    process while the file is unchanged (keyed by its resolved path, size and
    modification time): every codec, rung and decode resolves its checkpoint, and a
    shipped file is megabytes.  Returns a copy, for the caller to extend."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    h = _HASHES.get(key)
    if h is None:
        h = _HASHES[key] = hashlib.sha256(path.read_bytes())
    return h.copy()


def resolve(model: str = DEFAULT_MODEL, quality: int | None = None, root: Path | None = None,
            decode: bool = False) -> Quality:
    """A rung of a model.  Retired rungs resolve only with ``decode=True``."""
    model_dir = Path(root or CHECKPOINT_DIR) / model
    if not (model_dir / "model.json").exists():
        raise ValueError(f"unknown model {model!r}; shipped models: {list_models()}")
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
    weights = model_dir / meta.get("weights", "weights.safetensors")
    cfg = ModelConfig.from_dict(meta["config"])
    h = weights_hasher(weights)
    h.update(cfg.to_json().encode())
    h.update(repr(float(qmeta["imp_bias"])).encode())
    return Quality(model, quality, float(qmeta["imp_bias"]), h.hexdigest(), weights, cfg, qmeta)


def load_net(q: Quality) -> CodecNet:
    net = CodecNet(q.config)
    net.load_state_dict(load_file(str(q.weights)))
    net.encoder.shift_importance(q.imp_bias)
    return net.eval()


def write_model_dir(model_dir: str | os.PathLike, net: CodecNet, qualities_: dict[int, float],
                    provenance: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``weights.safetensors`` + ``model.json`` for a ladder {quality: imp_bias}."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    save_weights(net, model_dir / "weights.safetensors")
    meta = {
        "weights": "weights.safetensors",
        "config": json.loads(net.cfg.to_json()),
        "qualities": {str(k): {"imp_bias": float(v), **((extra or {}).get(k, {}))} for k, v in sorted(qualities_.items())},
        "provenance": provenance or {},
    }
    atomic_write_bytes(model_dir / "model.json", json.dumps(meta, indent=1).encode())
    return model_dir
