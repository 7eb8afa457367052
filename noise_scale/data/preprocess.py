"""Image preprocessing on the host: NumPy and PIL, no TensorFlow.

Randomness is counter-based: ``uniforms(seed, positions, n)`` hashes
(seed, stream position, draw number) with SplitMix64, so an example's crop and
flip depend on nothing but the run's seed and the example's position in the
stream: a resumed run, or the same run over any number of processes or worker
threads, draws exactly the same augmentation. It is vectorised (no generator
object per example), which matters for CIFAR-10 batches of 16,000.

ImageNet (Inception-style, as in Goyal et al. and torchvision):
  train: a random crop covering 8-100 % of the image area with aspect ratio in
    [3/4, 4/3] (10 attempts, else the whole image clipped to that ratio,
    centred), resized to ``size`` x ``size`` (bilinear, antialiased), flipped
    left-right with probability 1/2;
  eval: the central square of side min(h, w)·224/256, resized to ``size``: the
    same as resizing the shorter side to 256/224·size and cropping the centre.
CIFAR-10 (Zagoruyko & Komodakis): train pads 4 pixels on every side by
reflection, crops a random 32x32 window and flips with probability 1/2; eval
only normalises. Both normalise each channel by the training set's mean and
standard deviation.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

try:  # libjpeg-turbo without PIL's per-image overhead; optional: PIL decodes every format
    import simplejpeg
except ImportError:  # pragma: no cover - in the dependencies; kept optional for user hosts
    simplejpeg = None

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
CIFAR10_MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32) * 255
CIFAR10_STD = np.array([0.2470, 0.2435, 0.2616], np.float32) * 255

EVAL_CROP_FRACTION = 224 / 256
CROP_ATTEMPTS = 10
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (a bijective 64-bit hash), on uint64 arrays."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def uniforms(seed: int, positions, n: int) -> np.ndarray:
    """(len(positions), n) floats in [0, 1), a pure function of (seed, position, column)."""
    pos = np.asarray(positions, np.int64).astype(np.uint64).reshape(-1)
    with np.errstate(over="ignore"):
        s = _mix(np.array([seed % 2**64], np.uint64) + _GOLDEN)
        h = _mix(s ^ (pos * _GOLDEN))
        z = _mix(h[:, None] + np.arange(1, n + 1, dtype=np.uint64)[None, :] * _GOLDEN)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


# ImageNet ------------------------------------------------------------------------------


def random_resized_crop_box(height: int, width: int, u) -> tuple[int, int, int, int]:
    """(top, left, h, w) of an Inception-style crop, from ``4·CROP_ATTEMPTS`` uniforms ``u``."""
    area = height * width
    log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for a in range(CROP_ATTEMPTS):
        u0, u1, u2, u3 = u[4 * a : 4 * a + 4]
        target = area * (CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * u0)
        aspect = math.exp(log_lo + (log_hi - log_lo) * u1)
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(u2 * (height - h + 1)), height - h)
            left = min(int(u3 * (width - w + 1)), width - w)
            return top, left, h, w
    # Fallback: the whole image, clipped to the allowed aspect ratios, centred.
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        w, h = width, min(height, max(1, int(round(width / CROP_RATIO[0]))))
    elif ratio > CROP_RATIO[1]:
        h, w = height, min(width, max(1, int(round(height * CROP_RATIO[1]))))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def center_crop_box(height: int, width: int, fraction: float = EVAL_CROP_FRACTION):
    """(top, left, h, w) of the central square of side min(h, w)·fraction."""
    side = max(1, int(round(min(height, width) * fraction)))
    return (height - side) // 2, (width - side) // 2, side, side


def crop_resize(image: np.ndarray, box, size: int) -> np.ndarray:
    """Crop ``box`` = (top, left, h, w) of a uint8 HxWx3 image and resize it to size x size."""
    top, left, h, w = box
    if (h, w) == (size, size):
        return np.ascontiguousarray(image[top : top + h, left : left + w])
    pil = Image.fromarray(image)
    out = pil.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    return np.asarray(out)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx3 or HxWx4 uint8 → HxWx3."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1)
    return image[:, :, :3]


def decode_crop_resize(image, box_of, size: int) -> np.ndarray:
    """Crop ``box_of(h, w)`` of an image (uint8 array, or encoded bytes) resized to size x size.

    Encoded bytes are decoded only as far as the crop needs: the header gives the
    size, the box follows from it, and a JPEG whose crop is downscaled by 2, 4 or 8
    is decoded at that scale in the DCT domain, which skips most of the inverse DCT
    of a large image. The box is then scaled to the decoded image. JPEGs are decoded
    by simplejpeg where it is installed (the same libjpeg-turbo and the same pixels as
    PIL, ~10 % less time per training image: benchmarks/RESULTS.md), anything else by PIL.
    """
    if not isinstance(image, (bytes, np.bytes_)):
        image = as_rgb(image)
        return crop_resize(image, box_of(image.shape[0], image.shape[1]), size)
    if simplejpeg is not None and simplejpeg.is_jpeg(image):
        out = _simplejpeg_crop_resize(bytes(image), box_of, size)
        if out is not None:
            return out
    pil = Image.open(io.BytesIO(image))
    width, height = pil.size
    top, left, h, w = box_of(height, width)
    shrink = min(h, w) / size
    if shrink >= 2 and pil.format == "JPEG":
        pil.draft("RGB", (math.ceil(width / shrink), math.ceil(height / shrink)))
    pil = pil.convert("RGB")
    fx, fy = pil.size[0] / width, pil.size[1] / height
    if (fx, fy) == (1, 1) and (h, w) == (size, size):
        return np.asarray(pil)[top : top + h, left : left + w]
    box = (left * fx, top * fy, (left + w) * fx, (top + h) * fy)
    return np.asarray(pil.resize((size, size), Image.BILINEAR, box=box))


def _simplejpeg_crop_resize(data: bytes, box_of, size: int) -> np.ndarray | None:
    """``decode_crop_resize`` of a JPEG through simplejpeg, pixel for pixel PIL's result;
    None for what it does not decode (CMYK, a damaged header): PIL then tries."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in ("Gray", "YCbCr", "RGB"):
        return None
    top, left, h, w = box_of(height, width)
    shrink = min(h, w) / size
    scaled = {}
    if shrink >= 2:  # PIL's draft scale (1/2, 1/4 or 1/8: libjpeg's finer M/8 steps would
        # give other pixels than a host decoding with PIL)
        scale = min(width // math.ceil(width / shrink), height // math.ceil(height / shrink))
        scale = next(a for a in (8, 4, 2, 1) if scale >= a)
        scaled = {"min_factor": scale, "min_width": -(-width // scale),
                  "min_height": -(-height // scale)}
    try:
        image = simplejpeg.decode_jpeg(data, colorspace="RGB", **scaled)
    except ValueError:
        return None
    fy, fx = image.shape[0] / height, image.shape[1] / width
    if (fx, fy) == (1, 1) and (h, w) == (size, size):
        return np.ascontiguousarray(image[top : top + h, left : left + w])
    x0, y0, x1, y1 = left * fx, top * fy, (left + w) * fx, (top + h) * fy
    # Hand PIL only the crop and the filter's reach around it (a bilinear filter reducing
    # by s reads s pixels either side): the same output, less copied into PIL.
    reach = math.ceil(max((x1 - x0) / size, (y1 - y0) / size, 1.0)) + 1
    cx0, cy0 = max(int(x0) - reach, 0), max(int(y0) - reach, 0)
    cx1 = min(math.ceil(x1) + reach, image.shape[1])
    cy1 = min(math.ceil(y1) + reach, image.shape[0])
    pil = Image.fromarray(np.ascontiguousarray(image[cy0:cy1, cx0:cx1]))
    box = (x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0)
    return np.asarray(pil.resize((size, size), Image.BILINEAR, box=box))


def imagenet_train(image, u, size: int) -> np.ndarray:
    """Random-resized crop + flip of one image (array or bytes); ``u``: IMAGENET_UNIFORMS."""
    out = decode_crop_resize(image, lambda h, w: random_resized_crop_box(h, w, u), size)
    return out[:, ::-1] if u[4 * CROP_ATTEMPTS] < 0.5 else out


IMAGENET_UNIFORMS = 4 * CROP_ATTEMPTS + 1


def imagenet_eval(image, size: int) -> np.ndarray:
    return decode_crop_resize(image, center_crop_box, size)


# CIFAR-10 ------------------------------------------------------------------------------

CIFAR_PAD = 4
CIFAR_UNIFORMS = 3


def pad_crop_flip(images: np.ndarray, u: np.ndarray, pad: int = CIFAR_PAD) -> np.ndarray:
    """Reflect-pad by ``pad``, crop back to the original size at random, flip half (vectorised).

    ``images`` is (B, H, W, C); ``u`` is (B, 3) uniforms: row offset, column offset, flip.
    """
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    dy = np.minimum((u[:, 0] * (2 * pad + 1)).astype(np.int64), 2 * pad)
    dx = np.minimum((u[:, 1] * (2 * pad + 1)).astype(np.int64), 2 * pad)
    flip = u[:, 2] < 0.5
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = np.where(flip[:, None], np.arange(w - 1, -1, -1)[None, :], np.arange(w)[None, :])
    cols = dx[:, None] + cols
    return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


# Both ----------------------------------------------------------------------------------


def normalize(images: np.ndarray, mean: np.ndarray, std: np.ndarray,
              dtype=np.float32) -> np.ndarray:
    """(x − mean) / std per channel, computed in float32, returned as ``dtype`` (on the
    host: a benchmark's data and the tests' reference; a run normalises on the device,
    ``models.NormalizedInput``)."""
    x = np.subtract(images, mean, dtype=np.float32)
    x *= 1.0 / std
    return x if dtype == np.float32 else x.astype(dtype)
