"""Lay out what a GPU session carries to the device machine (its tree is capped at 64 MiB).

    python -m bench.gpu_carry --train ../shared/data/train --kodak ../shared/data/kodak --out .carry

* ``OUT/split.json``: the train/validation split of the full training folder (the same
  split ``python -m engine.train --holdout 20`` makes), so a GPU run trains on exactly the
  training part and ``python -m engine.ship`` later reports on the held-out part;
* ``OUT/train/``: the training part only.  JPEG sources are copied as they are; PNG
  sources are re-encoded as JPEG quality 95, 4:4:4, and sources over ``--max-mp``
  megapixels are halved first (the Sun-Hays set already is) — this is what keeps the
  training set under the cap;
* ``OUT/kodak/``: the first ``--kodak-images`` Kodak files, for GPU *throughput* only
  (never for training or tuning).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from PIL import Image

from engine.data import list_images, split


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True)
    ap.add_argument("--kodak", required=True)
    ap.add_argument("--out", default=".carry")
    ap.add_argument("--holdout", type=int, default=20)
    ap.add_argument("--max-mp", type=float, default=0.5)
    ap.add_argument("--kodak-images", type=int, default=8)
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    (out / "train").mkdir(parents=True)
    (out / "kodak").mkdir()
    train, val = split(list_images(args.train), args.holdout)
    names = []
    for p in train:
        if p.suffix.lower() in (".jpg", ".jpeg"):
            shutil.copy(p, out / "train" / p.name)
            names.append(p.name)
            continue
        with Image.open(p) as im:
            im = im.convert("RGB")
            if im.width * im.height > args.max_mp * 1e6:
                im = im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS)
            name = p.stem + ".jpg"
            im.save(out / "train" / name, quality=95, subsampling=0)
            names.append(name)
    (out / "split.json").write_text(json.dumps({"train": names, "val": [p.name for p in val],
                                                "note": "val names refer to the full training folder"}, indent=1))
    for p in list_images(args.kodak)[: args.kodak_images]:
        shutil.copy(p, out / "kodak" / p.name)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{len(names)} training images, {len(val)} held out, {args.kodak_images} Kodak; {size / 2**20:.1f} MiB in {out}")


if __name__ == "__main__":
    main()
