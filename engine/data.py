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


class CropSampler:
    """Random crops + flips from images kept in memory."""

    def __init__(self, paths: list[Path], patch: int, seed: int):
        self.images = [load_rgb(p) for p in paths]
        self.images = [im for im in self.images if min(im.shape[:2]) >= patch]
        if not self.images:
            raise ValueError(f"no training image is at least {patch}x{patch}")
        self.patch = patch
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> torch.Tensor:
        out = np.empty((n, self.patch, self.patch, 3), np.uint8)
        for i in range(n):
            im = self.images[self.rng.integers(len(self.images))]
            y = self.rng.integers(im.shape[0] - self.patch + 1)
            x = self.rng.integers(im.shape[1] - self.patch + 1)
            c = im[y:y + self.patch, x:x + self.patch]
            if self.rng.random() < 0.5:
                c = c[:, ::-1]
            if self.rng.random() < 0.5:
                c = c[::-1]
            out[i] = c
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255)
