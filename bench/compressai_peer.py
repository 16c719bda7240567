"""The learned-codec peer for ``bench.throughput --compressai PYTHON``: CompressAI 1.2.8's
bmshj2018-factorized at quality 3, ``pretrained=False`` (the same layers, FLOPs and
entropy coder as the trained model, so a speed figure only; its bpp and PSNR mean
nothing), compress and decompress of the given images, one at a time, timed here.

Runs in its own environment, never the engine's (CompressAI is not a dependency)::

    python3 -m venv /tmp/cai && /tmp/cai/bin/pip install torch==2.13.0 compressai==1.2.8
    /tmp/cai/bin/python bench/compressai_peer.py --threads 2 IMAGE...

Prints one JSON line: seconds to compress and to decompress all images (after one
warm-up image), the count and the megapixels.  Imports nothing from this repository.
"""
from __future__ import annotations

import argparse
import json
import time


def _torchvision_or_stub() -> None:
    """CompressAI imports torchvision only to list its transforms (compressai/registry).
    Where the torchvision wheel does not fit the CPU torch (pip found only a CUDA build
    of it), an empty stand-in is put in its place; the codec does not use it."""
    import sys
    import types
    try:
        import torchvision.transforms  # noqa: F401
    except Exception:  # noqa: BLE001 - e.g. "operator torchvision::nms does not exist"
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        tv = types.ModuleType("torchvision")
        tv.transforms = types.ModuleType("torchvision.transforms")
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tv.transforms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quality", type=int, default=3)
    a = ap.parse_args()

    import numpy as np
    import torch
    import torch.nn.functional as F
    _torchvision_or_stub()
    from compressai.zoo import bmshj2018_factorized
    from PIL import Image

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = bmshj2018_factorized(quality=a.quality, pretrained=False).eval()
    net.update(force=True)                 # the entropy bottleneck's CDF tables

    def load(p):
        with Image.open(p) as im:
            x = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)[None].float() / 255
        h, w = x.shape[-2:]
        H, W = -(-h // 64) * 64, -(-w // 64) * 64     # the network's stride
        return F.pad(x, (0, W - w, 0, H - h), mode="replicate"), (h, w)

    xs = [load(p) for p in a.images]
    with torch.inference_mode():
        warm = net.compress(xs[0][0])
        net.decompress(warm["strings"], warm["shape"])
        t0 = time.perf_counter()
        outs = []
        for x, hw in xs:
            outs.append(net.compress(x))
        t1 = time.perf_counter()
        for o, (x, (h, w)) in zip(outs, xs):
            y = net.decompress(o["strings"], o["shape"])["x_hat"][..., :h, :w].clamp(0, 1).mul(255).round().to(torch.uint8)
        t2 = time.perf_counter()
    print(json.dumps({"codec": f"CompressAI bmshj2018-factorized q{a.quality} (pretrained=False)",
                      "compressai": __import__("compressai").__version__, "torch": torch.__version__,
                      "threads": a.threads, "images": len(xs), "encode_s": t1 - t0, "decode_s": t2 - t1,
                      "megapixels": sum(h * w for _, (h, w) in xs) / 1e6, "last_shape": list(y.shape)}))


if __name__ == "__main__":
    main()
