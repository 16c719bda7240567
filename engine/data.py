"""Image folders -> random training crops (held in RAM as uint8)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder of images: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def load_rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def split(paths: list[Path], holdout: int) -> tuple[list[Path], list[Path]]:
    """Deterministic train/validation split: every k-th image is held out."""
    if holdout <= 0:
        return paths, []
    step = max(1, len(paths) // holdout)
    val = paths[::step][:holdout]
    vs = set(val)
    return [p for p in paths if p not in vs], val


def load_split(path: str | Path, folder: str | Path) -> tuple[list[Path], list[Path]]:
    """A train/validation split written by an earlier run (split.json): names resolved
    in ``folder``.  Validation names need not be present (a GPU machine may carry only
    the training part); a missing training image is an error."""
    import json

    d = json.loads(Path(path).read_text())
    folder = Path(folder)
    train = [folder / n for n in d["train"]]
    missing = [p.name for p in train if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} training images of {path} are not in {folder}: {missing[:3]}")
    return train, [folder / n for n in d["val"]]


def _load_parallel(paths: list[Path]) -> list[np.ndarray]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as ex:  # Pillow decodes without the GIL
        return list(ex.map(load_rgb, paths))


class CropSampler:
    """Random crops + flips from images kept in memory (host RAM)."""

    def __init__(self, paths: list[Path], patch: int, seed: int):
        self.images = [im for im in _load_parallel(paths) if min(im.shape[:2]) >= patch]
        if not self.images:
            raise ValueError(f"no training image is at least {patch}x{patch}")
        self.patch = patch
        self.rng = np.random.default_rng(seed)

    def _draw(self):
        """One random crop: (image, its crop, axes to flip).  Both samplers draw through
        here, so the same seed gives the same crops on the host and on a device."""
        im = self.images[self.rng.integers(len(self.images))]
        y = int(self.rng.integers(im.shape[0] - self.patch + 1))
        x = int(self.rng.integers(im.shape[1] - self.patch + 1))
        flips = [axis for axis in (1, 0) if self.rng.random() < 0.5]  # horizontal, then vertical
        return im[y:y + self.patch, x:x + self.patch], flips

    def batch(self, n: int) -> torch.Tensor:
        out = np.empty((n, self.patch, self.patch, 3), np.uint8)
        for i in range(n):
            c, flips = self._draw()
            out[i] = np.flip(c, flips) if flips else c
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255)


class DeviceCropSampler(CropSampler):
    """The same crops with the images held on the training device (a GPU): no host
    copies per step, so the GPU is not left waiting on the data."""

    def __init__(self, paths: list[Path], patch: int, seed: int, device):
        super().__init__(paths, patch, seed)
        self.device = torch.device(device)
        self.images = [torch.tensor(im, device=self.device) for im in self.images]

    def batch(self, n: int) -> torch.Tensor:
        crops = [c.flip(flips) if flips else c for c, flips in (self._draw() for _ in range(n))]
        return torch.stack(crops).permute(0, 3, 1, 2).float().div_(255)
