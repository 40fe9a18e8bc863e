"""A deterministic synthetic image world: shapes with colours, sizes, counts, fill and backgrounds.

``Scene`` describes one image; ``render(scene)`` draws it (64x64 RGB by default) with PIL; the same
scene always gives the same pixels, and ``random_scene(rng)`` draws scenes from a seeded generator.
Object colours are saturated (or black/white) and backgrounds are grey textures, so every colour
stays visible on every background.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IMAGE_SIZE = 64

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond", "cross", "heart", "ring",
          "pentagon", "arrow", "crescent")
COLOURS = {
    "red": (220, 30, 30), "orange": (245, 140, 20), "yellow": (240, 225, 30), "green": (40, 170, 50),
    "cyan": (30, 215, 225), "blue": (35, 70, 230), "purple": (140, 40, 200), "pink": (245, 120, 190),
    "white": (250, 250, 250), "black": (10, 10, 10),
}
TEXTURES = ("plain", "stripes", "dots", "checker", "grid", "noise")
SIZES = {"small": 0.55, "medium": 0.75, "large": 1.0}
COUNT_WORDS = ("one", "two", "three")


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    count: int = 1
    size: str = "medium"
    filled: bool = True
    texture: str = "plain"
    seed: int = 0  # layout, background tones and noise


def random_scene(rng: random.Random, **fixed) -> Scene:
    """A scene with every attribute not given in ``fixed`` drawn from ``rng``."""
    values = {
        "shape": rng.choice(SHAPES),
        "colour": rng.choice(list(COLOURS)),
        "count": rng.choice((1, 1, 2, 3)),
        "size": rng.choice(list(SIZES)),
        "filled": rng.random() < 0.7,
        "texture": rng.choice(TEXTURES),
        "seed": rng.getrandbits(31),
    }
    values.update(fixed)
    return Scene(**values)


def shape_outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Polygon vertices of a shape centred at (cx, cy) with radius r; None for round shapes."""
    def ring(n, radius, offset=-math.pi / 2):
        return [(cx + radius * math.cos(offset + 2 * math.pi * i / n), cy + radius * math.sin(offset + 2 * math.pi * i / n))
                for i in range(n)]

    if shape == "square":
        return [(cx - r * 0.8, cy - r * 0.8), (cx + r * 0.8, cy - r * 0.8), (cx + r * 0.8, cy + r * 0.8), (cx - r * 0.8, cy + r * 0.8)]
    if shape == "triangle":
        return ring(3, r)
    if shape == "pentagon":
        return ring(5, r)
    if shape == "hexagon":
        return ring(6, r, 0)
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.65, cy), (cx, cy + r), (cx - r * 0.65, cy)]
    if shape == "star":
        outer, inner = ring(5, r), ring(5, r * 0.42, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "cross":
        a, b = r * 0.32, r
        return [(cx - a, cy - b), (cx + a, cy - b), (cx + a, cy - a), (cx + b, cy - a), (cx + b, cy + a), (cx + a, cy + a),
                (cx + a, cy + b), (cx - a, cy + b), (cx - a, cy + a), (cx - b, cy + a), (cx - b, cy - a), (cx - a, cy - a)]
    if shape == "arrow":
        a = r * 0.3
        return [(cx - r, cy - a), (cx + r * 0.2, cy - a), (cx + r * 0.2, cy - r * 0.75), (cx + r, cy),
                (cx + r * 0.2, cy + r * 0.75), (cx + r * 0.2, cy + a), (cx - r, cy + a)]
    if shape == "heart":
        pts = []
        for i in range(40):
            t = 2 * math.pi * i / 40
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((cx + r * x / 17, cy - r * y / 17))
        return pts
    return None


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, rgb, filled: bool,
               background) -> None:
    width = max(2, int(r * 0.22))
    fill = rgb if filled else None
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=rgb, width=width)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=None, outline=rgb, width=max(3, int(r * 0.35)))
    elif shape == "crescent":
        o = r * 0.55
        if filled:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb)
            draw.ellipse([cx - r + o, cy - r - o * 0.3, cx + r + o, cy + r - o * 0.3], fill=background)
        else:
            draw.arc([cx - r, cy - r, cx + r, cy + r], start=35, end=305, fill=rgb, width=width)
            draw.arc([cx - r + o, cy - r - o * 0.3, cx + r + o, cy + r - o * 0.3], start=115, end=225, fill=rgb,
                     width=width)
    else:
        pts = shape_outline(shape, cx, cy, r)
        if filled:
            draw.polygon(pts, fill=rgb)
        else:
            draw.line(pts + [pts[0]], fill=rgb, width=width, joint="curve")


def background(texture: str, rng: np.random.Generator, size: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A grey texture and its mean colour (used to cut the crescent)."""
    a, b = sorted(rng.integers(70, 190, size=2))
    if b - a < 35:
        b = min(235, a + 45)
    yy, xx = np.mgrid[0:size, 0:size]
    if texture == "plain":
        img = np.full((size, size), a + (b - a) // 2, dtype=np.float32)
    elif texture == "stripes":
        period = int(rng.integers(6, 11))
        axis = xx if rng.random() < 0.5 else yy
        img = np.where((axis // (period // 2)) % 2 == 0, a, b).astype(np.float32)
    elif texture == "dots":
        period = int(rng.integers(7, 11))
        d = ((xx % period) - period / 2) ** 2 + ((yy % period) - period / 2) ** 2
        img = np.where(d < (period / 4) ** 2, b, a).astype(np.float32)
    elif texture == "checker":
        period = int(rng.integers(6, 12))
        img = np.where(((xx // period) + (yy // period)) % 2 == 0, a, b).astype(np.float32)
    elif texture == "grid":
        period = int(rng.integers(7, 12))
        img = np.where((xx % period < 2) | (yy % period < 2), b, a).astype(np.float32)
    else:  # noise
        img = rng.uniform(a, b, size=(size, size)).astype(np.float32)
    mean = int(img.mean())
    return np.repeat(img[..., None], 3, axis=2), (mean, mean, mean)


def render(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw a scene; deterministic in ``scene`` (its seed fixes layout and background)."""
    rng = np.random.default_rng(scene.seed)
    pixels, mean_rgb = background(scene.texture, rng, size)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    base_r = size * 0.30 * SIZES[scene.size] / (1.0 if scene.count == 1 else 1.45 if scene.count == 2 else 1.7)
    centres = place(scene.count, base_r, size, rng)
    for cx, cy in centres:
        draw_shape(draw, scene.shape, cx, cy, base_r, COLOURS[scene.colour], scene.filled, mean_rgb)
    return image


def place(count: int, r: float, size: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Centres for ``count`` objects of radius r inside the image, not overlapping (best effort)."""
    margin = r + 1
    centres: list[tuple[float, float]] = []
    for _ in range(200):
        if len(centres) == count:
            break
        c = (float(rng.uniform(margin, size - margin)), float(rng.uniform(margin, size - margin)))
        if all((c[0] - x) ** 2 + (c[1] - y) ** 2 > (2 * r + 1) ** 2 for x, y in centres):
            centres.append(c)
    while len(centres) < count:  # crowded: fall back to a row
        centres.append((margin + len(centres) * (size - 2 * margin) / max(count - 1, 1), size / 2))
    return centres


def shift(image: Image.Image, kind: str, seed: int) -> Image.Image:
    """Domain shifts of the objects task: heavy noise, blur, or a colour cast."""
    if kind == "noise":
        rng = np.random.default_rng(seed)
        arr = np.asarray(image).astype(np.float32) + rng.normal(0, 45, size=(image.height, image.width, 3))
        return Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=1.6))
    if kind == "colorshift":
        arr = np.asarray(image).astype(np.float32)
        arr = arr * np.array([0.85, 0.95, 1.15]) + np.array([25, 5, -15])
        return Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    raise ValueError(kind)
