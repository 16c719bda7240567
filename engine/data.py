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


# --- colour coverage (issue #29) ---------------------------------------------------------
# Natural photos rarely hold saturated colours, and a codec trained only on them decodes a
# pure blue as dark red.  Training batches therefore mix three kinds of patches: photo
# crops as they are, photo crops with their channels permuted and their saturation pushed
# up, and drawn images of saturated shapes on plain backgrounds (logos, charts, signs).

def saturated_colour(rng: np.random.Generator) -> np.ndarray:
    """One RGB colour, biased to the gamut's surface: a corner, a fully saturated hue at a
    random value, or anything."""
    u = rng.random()
    if u < 0.3:                                       # a corner of the RGB cube
        return rng.integers(0, 2, 3).astype(np.float32) * 255
    if u < 0.75:                                      # a saturated hue: one channel 0, one max
        c = np.empty(3, np.float32)
        order = rng.permutation(3)
        v = 255 * (0.35 + 0.65 * rng.random())
        c[order[0]], c[order[1]], c[order[2]] = v, 0.0, v * rng.random()
        return c
    return (rng.random(3) * 255).astype(np.float32)


def boost_colours(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A photo crop with its channels permuted and its saturation scaled by 1..3."""
    x = crop[..., rng.permutation(3)].astype(np.float32)
    grey = x.mean(-1, keepdims=True)
    x = grey + (x - grey) * (1 + 2 * rng.random())
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def drawn_patch(rng: np.random.Generator, patch: int) -> np.ndarray:
    """Saturated shapes (rectangles, discs, bars, strokes) on a plain background."""
    u = rng.random()
    bg = (np.full(3, 255, np.float32) if u < 0.35 else np.zeros(3, np.float32) if u < 0.45
          else saturated_colour(rng))
    img = np.broadcast_to(bg, (patch, patch, 3)).copy()
    yy, xx = np.mgrid[0:patch, 0:patch].astype(np.float32)
    for _ in range(int(rng.integers(0, 7))):
        col = saturated_colour(rng)
        kind = rng.integers(4)
        cy, cx = rng.random(2) * patch
        ry, rx = (0.05 + 0.5 * rng.random(2)) * patch
        if kind == 0:                                 # rectangle
            m = (abs(yy - cy) < ry) & (abs(xx - cx) < rx)
        elif kind == 1:                               # disc / ellipse
            m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        elif kind == 2:                               # a bar of a chart, to the bottom edge
            m = (abs(xx - cx) < rx / 3) & (yy > cy)
        else:                                         # a thin stroke (text, lines)
            a = rng.random() * np.pi
            d = (xx - cx) * np.sin(a) - (yy - cy) * np.cos(a)
            m = (abs(d) < 1 + 3 * rng.random()) & ((xx - cx) ** 2 + (yy - cy) ** 2 < (ry + rx) ** 2)
        img[m] = col
    if rng.random() < 0.5:                            # a little texture, as in scans and photos
        img += rng.normal(0, 1 + 6 * rng.random(), img.shape).astype(np.float32)
    if rng.random() < 0.3:                            # a soft gradient across the patch
        g = (yy if rng.random() < 0.5 else xx) / patch - 0.5
        img += g[..., None] * rng.normal(0, 40, 3).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


class ColourMixSampler(CropSampler):
    """Crops as :class:`CropSampler` draws them, a fraction ``boost`` of them with boosted
    colours and a fraction ``drawn`` replaced by drawn saturated shapes."""

    def __init__(self, paths: list[Path], patch: int, seed: int, boost: float = 0.25, drawn: float = 0.25):
        super().__init__(paths, patch, seed)
        self.boost, self.drawn = boost, drawn

    def batch(self, n: int) -> torch.Tensor:
        out = np.empty((n, self.patch, self.patch, 3), np.uint8)
        for i in range(n):
            u = self.rng.random()
            if u < self.drawn:
                out[i] = drawn_patch(self.rng, self.patch)
                continue
            c, flips = self._draw()
            c = np.flip(c, flips) if flips else c
            out[i] = boost_colours(c, self.rng) if u < self.drawn + self.boost else c
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255)
