"""The bundled synthetic detection dataset ("shapes"): a deterministic COCO-format generator.

Each image is a textured, noisy background (colour gradient, low-frequency colour noise, optional
stripes and clutter lines) with 1..12 filled shapes of 8 classes drawn over it in random order,
so later shapes occlude earlier ones. Shapes are rotated, coloured independently of their class
(the class is the shape only), shaded (flat, gradient or textured) and anti-aliased; the whole
image then gets colour jitter, pixel noise and sometimes a slight blur.

Annotation conventions:
- ``bbox`` is COCO ``[x, y, w, h]`` in absolute pixels (float), the box of the *full* shape
  (its polygon's extent), also where the shape is partly hidden by later shapes.
- An object more than 70% occluded (visible pixels < 30% of its pixels) is not annotated
  (its visible part stays in the image, like an unlabelled, heavily occluded object in COCO).
  The last-drawn shape is never occluded, so every image has at least one annotation.
- ``area`` is the shape's full pixel area (sum of its anti-aliased coverage); ``iscrowd`` 0;
  category ids are 1..8 in the order of :data:`SHAPE_CLASSES`.

Determinism: image ``i`` of split ``s`` is a pure function of ``(seed, s, i)`` (a NumPy
``SeedSequence``), so the output does not depend on the number of worker processes, and two
seeds give unrelated datasets.

Layout written by :func:`generate_shapes_dataset` under ``root``::

    root/shapes_train/annotations.json   root/shapes_train/images/000000.png ...
    root/shapes_val/annotations.json     root/shapes_val/images/000000.png ...

Each split is generated into a hidden temporary folder and renamed into place only when
complete, so an interrupted run leaves no half-written split that could be trusted later.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import struct
import uuid
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "SHAPE_CLASSES",
    "GENERATOR_VERSION",
    "generate_shapes_dataset",
    "generate_split",
    "render_image",
    "split_is_complete",
]

SHAPE_CLASSES: Tuple[str, ...] = ("circle", "ellipse", "square", "triangle", "star", "hexagon", "cross", "ring")
GENERATOR_VERSION = 1  # bump when the rendering changes: existing datasets are then regenerated

_SPLIT_CODES = {"train": 0, "val": 1}
_SUPERSAMPLE = 2  # shapes are rasterised at 2x and box-filtered down (anti-aliasing)
_MIN_SIZE = 8.0  # smallest object extent in pixels
_MAX_OBJECTS = 12
_MAX_OCCLUDED = 0.7  # objects more hidden than this are not annotated


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------
def _circle(n: int = 40) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _unit_shape(cls: int, rng: np.random.Generator) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Return (outer polygon (P, 2), optional hole polygon) of class ``cls`` around the origin."""
    name = SHAPE_CLASSES[cls]
    hole = None
    if name == "circle":
        poly = _circle()
    elif name == "ellipse":
        poly = _circle() * np.array([1.0, rng.uniform(0.35, 0.62)])
    elif name == "square":
        poly = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    elif name == "triangle":
        ang = np.deg2rad(np.array([90.0, 210.0, 330.0]) + rng.uniform(-12.0, 12.0, 3))
        poly = np.stack([np.cos(ang), np.sin(ang)], axis=1) * rng.uniform(0.85, 1.0, (3, 1))
    elif name == "star":
        ang = np.linspace(0.0, 2.0 * math.pi, 10, endpoint=False)
        rad = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
        poly = np.stack([np.cos(ang) * rad, np.sin(ang) * rad], axis=1)
    elif name == "hexagon":
        ang = np.linspace(0.0, 2.0 * math.pi, 6, endpoint=False)
        poly = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    elif name == "cross":
        a = rng.uniform(0.26, 0.4)
        poly = np.array(
            [[a, 1], [a, a], [1, a], [1, -a], [a, -a], [a, -1], [-a, -1], [-a, -a], [-1, -a], [-1, a], [-a, a], [-a, 1]],
            dtype=np.float64,
        )
    elif name == "ring":
        poly = _circle()
        hole = _circle() * rng.uniform(0.45, 0.65)
    else:  # pragma: no cover - SHAPE_CLASSES and this table are edited together
        raise ValueError(f"unknown shape class {name!r}")
    return poly, hole


def _place(poly: np.ndarray, hole: Optional[np.ndarray], size: float, img_w: int, img_h: int, rng):
    """Rotate, scale so that the larger box side is ``size`` px, and put the shape inside the image.

    Returns (poly, hole, box) with box = (x0, y0, x1, y1) absolute pixels.
    """
    theta = rng.uniform(0.0, 2.0 * math.pi)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    poly = poly @ rot.T
    hole = None if hole is None else hole @ rot.T
    lo, hi = poly.min(0), poly.max(0)
    scale = size / float((hi - lo).max())
    ext = (hi - lo) * scale
    x0 = rng.uniform(0.0, img_w - ext[0])
    y0 = rng.uniform(0.0, img_h - ext[1])
    offset = np.array([x0, y0]) - lo * scale
    poly = poly * scale + offset
    hole = None if hole is None else hole * scale + offset
    return poly, hole, (x0, y0, x0 + ext[0], y0 + ext[1])


def _rasterise(poly: np.ndarray, hole: Optional[np.ndarray], box) -> Tuple[int, int, np.ndarray]:
    """Anti-aliased coverage of the shape in its integer window: (left, top, alpha (h, w) in [0, 1])."""
    left, top = int(math.floor(box[0])), int(math.floor(box[1]))
    w, h = int(math.ceil(box[2])) - left, int(math.ceil(box[3])) - top
    ss = _SUPERSAMPLE
    canvas = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(canvas)
    origin = np.array([left, top])
    draw.polygon([tuple(p) for p in ((poly - origin) * ss)], fill=255)
    if hole is not None:
        draw.polygon([tuple(p) for p in ((hole - origin) * ss)], fill=0)
    alpha = np.asarray(canvas.resize((w, h), Image.BOX), dtype=np.float32) / 255.0
    return left, top, alpha


# --------------------------------------------------------------------------------------------
# appearance
# --------------------------------------------------------------------------------------------
def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Textured background, float32 (h, w, 3) in [0, 255]-ish."""
    ys = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    c1, c2 = rng.uniform(0.0, 255.0, (2, 3)).astype(np.float32)
    phi = rng.uniform(0.0, 2.0 * math.pi)
    cos, sin = math.cos(phi), math.sin(phi)
    lo = min(0.0, cos) + min(0.0, sin)
    span = max(0.0, cos) + max(0.0, sin) - lo
    d = (xs * (cos / span) + (ys * (sin / span) - lo / span))[..., None]  # gradient ramp in [0, 1]
    # low-frequency colour noise ("blobs") plus the two-colour gradient
    gh, gw = int(rng.integers(2, 8)), int(rng.integers(2, 8))
    grid = np.clip(128.0 + 50.0 * rng.standard_normal((gh, gw, 3)), 0, 255).astype(np.uint8)
    img = np.asarray(Image.fromarray(grid, "RGB").resize((w, h), Image.BICUBIC), dtype=np.float32)
    k = np.float32(rng.uniform(0.2, 1.0))
    img *= k
    img += c1 - 128.0 * k
    img += d * (c2 - c1)
    if rng.random() < 0.4:  # stripes
        psi = rng.uniform(0.0, 2.0 * math.pi)
        period = rng.uniform(5.0, 40.0)
        wave = np.sin(2.0 * math.pi * (xs * w * math.cos(psi) + ys * h * math.sin(psi)) / period + rng.uniform(0, 6.3))
        img += wave[..., None] * rng.uniform(6.0, 30.0) * rng.uniform(-1.0, 1.0, 3).astype(np.float32)
    return img


def _clutter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random thin lines (not annotated)."""
    h, w = img.shape[:2]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(2, 10))):
        pts = rng.uniform(0, 1, (2, 2)) * np.array([w, h])
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.line([tuple(pts[0]), tuple(pts[1])], fill=col, width=int(rng.integers(1, 3)))
    return np.asarray(pil, dtype=np.float32)


def _object_colour(bg_mean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    col = rng.uniform(0.0, 255.0, 3)
    for _ in range(10):  # keep a minimum contrast against the local background
        if np.abs(col - bg_mean).sum() > 90.0:
            break
        col = rng.uniform(0.0, 255.0, 3)
    return col.astype(np.float32)


def _fill(h: int, w: int, colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill pattern of one object, float32 (h, w, 3): flat, gradient or textured."""
    style = rng.random()
    fill = np.broadcast_to(colour, (h, w, 3)).astype(np.float32)
    if style < 0.35:  # linear shading
        ang = rng.uniform(0.0, 2.0 * math.pi)
        ys = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
        xs = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
        fill = fill + (xs * math.cos(ang) + ys * math.sin(ang))[..., None] * rng.uniform(30.0, 90.0)
    elif style < 0.55:  # texture
        fill = fill + rng.standard_normal((h, w, 1), dtype=np.float32) * rng.uniform(8.0, 25.0)
    return fill


# --------------------------------------------------------------------------------------------
# one image
# --------------------------------------------------------------------------------------------
_NOISE_BANK: Optional[np.ndarray] = None


def _noise_bank() -> np.ndarray:
    """A fixed (480, 480, 3) float32 standard-normal field; images take random windows of it."""
    global _NOISE_BANK
    if _NOISE_BANK is None:
        _NOISE_BANK = np.random.default_rng(20240607).standard_normal((480, 480, 3), dtype=np.float32)
    return _NOISE_BANK


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_CODES[split], int(index)]))


def render_image(seed: int, split: str, index: int) -> Tuple[np.ndarray, List[Dict]]:
    """Render image ``index`` of ``split`` ("train" or "val").

    Returns:
        image: uint8 array (H, W, 3), RGB.
        objects: list of dicts ``{"category_id": int (1-based), "bbox": [x, y, w, h] (abs px),
        "area": float}``, in drawing order, occluded ones (> 70%) removed.
    """
    rng = _image_rng(seed, split, index)
    short = int(rng.integers(192, 289))
    aspect = math.exp(rng.uniform(math.log(0.6), math.log(1.6)))  # width / height
    if aspect >= 1.0:
        h, w = short, int(round(short * aspect))
    else:
        h, w = int(round(short / aspect)), short

    img = _background(h, w, rng)
    if rng.random() < 0.5:
        img = _clutter(img, rng)
    bg = img.copy()
    top_id = np.full((h, w), -1, dtype=np.int16)  # which object is on top at each pixel

    objects, full_px = [], []
    max_size = min(h, w) / 2.0
    for k in range(int(rng.integers(1, _MAX_OBJECTS + 1))):
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        size = math.exp(rng.uniform(math.log(_MIN_SIZE), math.log(max_size)))
        poly, hole = _unit_shape(cls, rng)
        poly, hole, box = _place(poly, hole, size, w, h, rng)
        left, top, alpha = _rasterise(poly, hole, box)
        ah, aw = alpha.shape
        alpha = alpha[: h - top, : w - left]  # the window can exceed the image by < 1 px
        ah, aw = alpha.shape
        region = img[top : top + ah, left : left + aw]
        colour = _object_colour(bg[top : top + ah : 3, left : left + aw : 3].reshape(-1, 3).mean(0), rng)
        a = alpha[..., None]
        region[...] = region * (1.0 - a) + _fill(ah, aw, colour, rng) * a
        solid = alpha >= 0.5
        top_id[top : top + ah, left : left + aw][solid] = k
        full_px.append(int(solid.sum()))
        x0, y0, x1, y1 = box
        objects.append(
            {
                "category_id": cls + 1,
                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                "area": round(float(alpha.sum()), 2),
            }
        )

    visible = np.bincount(top_id.ravel() + 1, minlength=len(objects) + 1)[1:]
    kept = [o for o, v, f in zip(objects, visible, full_px) if f > 0 and v >= (1.0 - _MAX_OCCLUDED) * f]

    # photometric jitter (contrast, brightness, channel gains) and sensor noise on the whole image
    mean = img[::4, ::4].reshape(-1, 3).mean(0)
    contrast, brightness = rng.uniform(0.75, 1.25), rng.uniform(0.8, 1.2)
    gains = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    img *= contrast * gains
    img += mean * (brightness - contrast) * gains
    bank = _noise_bank()
    oy, ox = int(rng.integers(0, bank.shape[0] - h + 1)), int(rng.integers(0, bank.shape[1] - w + 1))
    img += bank[oy : oy + h, ox : ox + w] * np.float32(rng.uniform(2.0, 12.0))
    out = np.clip(img, 0, 255, out=img).astype(np.uint8)
    if rng.random() < 0.2:
        out = np.asarray(Image.fromarray(out, "RGB").filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.0))))
    return out, kept


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path: str, image: np.ndarray) -> None:
    """Write an RGB uint8 (H, W, 3) array as a PNG, fast: every row uses the PNG "Sub" filter
    (difference to the pixel on the left, vectorised) and zlib Huffman-only coding, which suits
    noisy images (about 3x faster than PIL's encoder at a similar size)."""
    h, w, _ = image.shape
    rows = image.reshape(h, w * 3)
    filtered = np.empty((h, w * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = 1  # filter type Sub
    filtered[:, 1:4] = rows[:, :3]
    np.subtract(rows[:, 3:], rows[:, :-3], out=filtered[:, 4:])  # uint8 arithmetic wraps mod 256
    comp = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    idat = comp.compress(filtered.tobytes()) + comp.flush()
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


def _render_to_file(args) -> Dict:
    seed, split, index, image_dir = args
    image, objects = render_image(seed, split, index)
    file_name = f"{index:06d}.png"
    write_png(os.path.join(image_dir, file_name), image)
    return {"index": index, "file_name": file_name, "height": image.shape[0], "width": image.shape[1], "objects": objects}


# --------------------------------------------------------------------------------------------
# a split on disk
# --------------------------------------------------------------------------------------------
def _info(split: str, num_images: int, seed: int) -> Dict:
    return {
        "description": "codetr synthetic shapes (datasets/prepare_shapes.py)",
        "generator_version": GENERATOR_VERSION,
        "split": split,
        "num_images": int(num_images),
        "seed": int(seed),
    }


def split_is_complete(split_dir: str, num_images: int, seed: int) -> bool:
    """Whether ``split_dir`` holds a finished split generated with these parameters."""
    json_file = os.path.join(split_dir, "annotations.json")
    if not os.path.isfile(json_file):
        return False
    try:
        with open(json_file) as f:
            info = json.load(f).get("info", {})
    except (OSError, ValueError):
        return False
    split = info.get("split")
    return split in _SPLIT_CODES and info == _info(split, num_images, seed)


def _coco_dict(split: str, records: Sequence[Dict], seed: int) -> Dict:
    images, annotations = [], []
    for rec in sorted(records, key=lambda r: r["index"]):
        image_id = rec["index"] + 1
        images.append({"id": image_id, "file_name": rec["file_name"], "height": rec["height"], "width": rec["width"]})
        for obj in rec["objects"]:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0, **obj})
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPE_CLASSES)]
    return {
        "info": _info(split, len(images), seed),
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def _remove_stale_tmp(root: str) -> None:
    """Delete temporary folders left by generator processes that no longer run (same host)."""
    for name in os.listdir(root):
        if not name.startswith(".tmp-shapes-"):
            continue
        try:
            pid = int(name.split("-")[3])
            os.kill(pid, 0)
        except (IndexError, ValueError):
            pass
        except ProcessLookupError:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        except PermissionError:  # alive, someone else's
            pass


def generate_split(root: str, split: str, num_images: int, seed: int = 0, workers: Optional[int] = None) -> str:
    """Generate ``root/shapes_<split>`` unless a complete one with the same parameters exists.

    Args:
        root: dataset folder (created if missing).
        split: "train" or "val".
        num_images: number of images (>= 1).
        seed: base seed; image ``i`` depends only on ``(seed, split, i)``.
        workers: processes to render with (default: up to 4, at most the CPU count; 1 = inline).

    Returns:
        the split folder, holding ``annotations.json`` and ``images/``.
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_CODES)}, got {split!r}")
    if int(num_images) < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images!r}")
    root = os.path.abspath(root)
    final = os.path.join(root, f"shapes_{split}")
    if split_is_complete(final, num_images, seed):
        return final
    os.makedirs(root, exist_ok=True)
    with _FileLock(os.path.join(root, f".shapes_{split}.lock")):  # one generator per split at a time
        if split_is_complete(final, num_images, seed):  # made by the process we waited for
            return final
        return _generate_split_unlocked(root, final, split, num_images, seed, workers)


class _FileLock:
    """Advisory exclusive lock (``fcntl.flock``) on a file; a no-op where fcntl is missing."""

    def __init__(self, path: str):
        self.path, self.fd = path, None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            return self
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None


def _generate_split_unlocked(root: str, final: str, split: str, num_images: int, seed: int, workers) -> str:
    _remove_stale_tmp(root)
    tmp = os.path.join(root, f".tmp-shapes-{split}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    image_dir = os.path.join(tmp, "images")
    os.makedirs(image_dir)
    try:
        jobs = [(seed, split, i, image_dir) for i in range(int(num_images))]
        if workers is None:
            workers = min(4, os.cpu_count() or 1)
        if workers > 1 and len(jobs) >= 64:
            ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
            with ctx.Pool(workers) as pool:
                records = list(pool.imap_unordered(_render_to_file, jobs, chunksize=16))
        else:
            records = [_render_to_file(job) for job in jobs]
        with open(os.path.join(tmp, "annotations.json"), "w") as f:
            json.dump(_coco_dict(split, records, seed), f)
        # swap into place: an old or partial split is moved aside first, then removed
        if os.path.exists(final):
            if split_is_complete(final, num_images, seed):  # another process finished first
                shutil.rmtree(tmp, ignore_errors=True)
                return final
            trash = tmp + ".old"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not split_is_complete(final, num_images, seed):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def generate_shapes_dataset(
    root: str, num_train: int = 2000, num_val: int = 200, seed: int = 0, workers: Optional[int] = None
) -> Dict[str, Dict[str, str]]:
    """Generate (or reuse) both splits under ``root``.

    Returns:
        ``{"train": {"json_file": ..., "image_root": ...}, "val": {...}}`` (absolute paths).
    """
    out = {}
    for split, n in (("train", num_train), ("val", num_val)):
        d = generate_split(root, split, n, seed=seed, workers=workers)
        out[split] = {"json_file": os.path.join(d, "annotations.json"), "image_root": os.path.join(d, "images")}
    return out
