"""Procedural pictures of the world: one shape with a colour and a pattern, on a backdrop.

Everything is drawn with numpy on whole chunks of images at once (a chunk of 1024 pictures is a
handful of array operations per group value), so the 16,000 training pictures of the default world
take seconds. The visual definition of every concept of ``concepts/miniworld.yaml`` lives here, in
tables keyed by concept name; :func:`check_registry` makes sure the two agree.

Lengths are fractions of the image size, so every size draws the same scene. Object colours are
saturated hues and backdrops muted or dark tones (an object never vanishes into its backdrop);
patterns are a shade of the object's colour, darker on a light colour and lighter on a dark one,
so that every colour shows its pattern as clearly and keeps its hue.
"""

from __future__ import annotations

import numpy as np

from clipaudit.errors import RegistryError
from clipaudit.world.settings import WORLD_GROUPS

# object colours (saturated) and backdrops (muted or dark), RGB
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 25),
    "yellow": (235, 215, 35),
    "green": (45, 170, 60),
    "blue": (45, 95, 225),
    "purple": (145, 60, 200),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "sand": (205, 186, 140),
    "forest": (48, 78, 48),
    "ocean": (30, 48, 96),
    "snow": (230, 232, 236),
    "night": (20, 20, 28),
    "concrete": (125, 125, 128),
}
# half the object's extent, as a fraction of the image side
SIZES: dict[str, float] = {"small": 0.16, "medium": 0.23, "large": 0.30}
# centre (x, y) as fractions of the image side; each picture jitters it by up to JITTER
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.30, 0.50),
    "right": (0.70, 0.50),
    "top": (0.50, 0.30),
    "bottom": (0.50, 0.70),
}
JITTER = 0.04
SHAPES = ("circle", "square", "triangle", "star", "cross")
TEXTURES = ("plain", "striped", "dotted", "checkered")
EDITS = ("unedited", "blurred", "noisy", "pixelated")
PATTERN_PERIOD = 1 / 8  # of the image side: two periods per patch of a side/4 ViT patch
PATTERN_MIX = 0.5  # patterned pixels mix this much black (light colours) or white (dark ones)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # Rec. 601 luma of an RGB colour
NOISE_SIGMA = 18.0  # grey levels
BLUR_SIGMA = 1 / 40  # of the image side
STAR_INNER = 0.45  # inner radius of the star, outer radius 1

TABLES: dict[str, tuple[str, ...]] = {
    "Shape": SHAPES,
    "Color": tuple(COLORS),
    "Background": tuple(BACKGROUNDS),
    "Texture": TEXTURES,
    "Size": tuple(SIZES),
    "Position": tuple(POSITIONS),
    "Post-processing": EDITS,
}
CHUNK = 1024


def check_registry(values: dict[str, tuple[str, ...]]) -> None:
    """Refuse a registry whose world groups name other concepts than the renderer draws."""
    for group in WORLD_GROUPS:
        if set(values[group]) != set(TABLES[group]):
            raise RegistryError(
                f"group {group!r} of the registry has concepts {sorted(values[group])}, but the "
                f"world draws {sorted(TABLES[group])}; the world renders concepts/miniworld.yaml"
            )


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of ``shape`` at object coordinates (u right, v down, unit half-extent)."""
    au, av = np.abs(u), np.abs(v)
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(au, av) <= 0.82
    if shape == "triangle":  # apex up at v = -1, base at v = 0.75, base half-width 1.1
        return (v <= 0.75) & (au <= (v + 1.0) * (1.1 / 1.75))
    if shape == "cross":
        return ((au <= 0.32) & (av <= 0.95)) | ((av <= 0.32) & (au <= 0.95))
    if shape == "star":  # five points, one up; fold the angle into one point's sector
        rho = np.hypot(u, v)
        sector = 2 * np.pi / 5
        phi = np.abs(np.mod(np.arctan2(u, -v) + sector / 2, sector) - sector / 2)
        px, py = rho * np.cos(phi), rho * np.sin(phi)
        bx, by = STAR_INNER * np.cos(sector / 2), STAR_INNER * np.sin(sector / 2)
        # inside when on the origin's side of the edge from the tip (1, 0) to the notch (bx, by)
        return (bx - 1.0) * py - by * (px - 1.0) >= 0
    raise ValueError(f"unknown shape {shape!r}")


def _pattern(texture: str, x: np.ndarray, y: np.ndarray, period: float) -> np.ndarray:
    """Where ``texture`` puts its shade of the object's colour (darker on a light colour, lighter
    on a dark one), at image coordinates ``x``, ``y``."""
    if texture == "plain":
        return np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=bool)
    if texture == "striped":
        return np.floor((x + y) / period) % 2 == 0
    if texture == "checkered":
        return (np.floor(x / period) + np.floor(y / period)) % 2 == 0
    if texture == "dotted":
        dx = np.mod(x, period) - period / 2
        dy = np.mod(y, period) - period / 2
        return dx * dx + dy * dy <= (0.32 * period) ** 2
    raise ValueError(f"unknown texture {texture!r}")


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``(n, S, S, 3)`` float images, edges repeated."""
    from scipy.ndimage import gaussian_filter1d

    out = gaussian_filter1d(images, sigma, axis=1, mode="nearest", truncate=2.5)
    return gaussian_filter1d(out, sigma, axis=2, mode="nearest", truncate=2.5)


def _pixelate(images: np.ndarray, block: int) -> np.ndarray:
    n, s = images.shape[0], images.shape[1]
    blocks = images.reshape(n, s // block, block, s // block, block, 3).mean(axis=(2, 4))
    return np.repeat(np.repeat(blocks, block, axis=1), block, axis=2)


def render(
    scenes: dict[str, np.ndarray],
    values: dict[str, tuple[str, ...]],
    size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Pictures of ``scenes`` (concept indices per group, in ``values``' order) as ``(n, S, S, 3)``
    uint8. Position jitter and pixel noise come from ``rng``, chunk by chunk, so the result
    depends only on the scenes, the size and the generator's seed."""
    n = len(scenes[WORLD_GROUPS[0]])
    names = {g: np.asarray(values[g], dtype=object) for g in WORLD_GROUPS}
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    coords = np.arange(size, dtype=np.float32) + 0.5
    xx, yy = coords[None, None, :], coords[None, :, None]
    for start in range(0, n, CHUNK):
        part = {g: names[g][scenes[g][start : start + CHUNK]] for g in WORLD_GROUPS}
        out[start : start + CHUNK] = _render_chunk(part, size, xx, yy, rng)
    return out


def _render_chunk(
    part: dict[str, np.ndarray],
    size: int,
    xx: np.ndarray,
    yy: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    m = len(part["Shape"])
    jitter = rng.uniform(-JITTER, JITTER, (m, 2)).astype(np.float32) * size
    centre = np.array([POSITIONS[p] for p in part["Position"]], dtype=np.float32) * size + jitter
    radius = np.array([SIZES[s] for s in part["Size"]], dtype=np.float32)[:, None, None] * size
    u = (xx - centre[:, 0, None, None]) / radius
    v = (yy - centre[:, 1, None, None]) / radius

    inside = np.zeros((m, size, size), dtype=bool)
    for shape in SHAPES:
        rows = np.flatnonzero(part["Shape"] == shape)
        if len(rows):
            inside[rows] = _shape_mask(shape, u[rows], v[rows])
    patterned = np.zeros((m, size, size), dtype=bool)
    for texture in TEXTURES[1:]:
        rows = np.flatnonzero(part["Texture"] == texture)
        if len(rows):
            patterned[rows] = _pattern(texture, xx, yy, PATTERN_PERIOD * size)

    # every pixel is the backdrop (0), the object's colour (1) or its pattern's shade (2)
    index = inside.view(np.uint8) + (inside & patterned).view(np.uint8)
    fill = np.array([COLORS[c] for c in part["Color"]], dtype=np.float32)
    light = (fill @ LUMA > 127.5)[:, None]
    shade = np.where(light, fill * (1 - PATTERN_MIX), fill + PATTERN_MIX * (255.0 - fill))
    backdrop = np.array([BACKGROUNDS[b] for b in part["Background"]], dtype=np.float32)
    palette = np.stack([backdrop, fill, shade], axis=1)
    palette = np.rint(palette).astype(np.uint8)
    flat = np.arange(m, dtype=np.intp)[:, None, None] * 3 + index
    images = np.empty((m, size, size, 3), dtype=np.uint8)
    for channel in range(3):  # one flat take per channel: several times faster than fancy indexing
        images[..., channel] = np.take(palette[..., channel].reshape(-1), flat)

    edits = part["Post-processing"]
    for edit in EDITS[1:]:
        rows = np.flatnonzero(edits == edit)
        if not len(rows):
            continue
        edited = images[rows].astype(np.float32)
        if edit == "blurred":
            edited = _blur(edited, BLUR_SIGMA * size)
        elif edit == "pixelated":
            edited = _pixelate(edited, size // 16)
        else:
            edited += NOISE_SIGMA * rng.standard_normal(edited.shape, dtype=np.float32)
        images[rows] = np.clip(np.rint(edited), 0, 255).astype(np.uint8)
    return images
