"""Procedural outdoor scenes for ``siam synth`` (numpy + Pillow only).

:func:`render_scene` paints one scene back to front -- sky, far layer, ground covers, paths,
objects sorted by depth, overlays, wires -- and returns the image with one exact boolean mask per
attribute *after occlusion*. Every attribute has its own appearance (colour, texture, shape) and a
plausible placement (sky, horizon, far, water, ground, objects); positions, sizes, palettes and
lighting are random. Non-attribute elements (sky, plain ground, far hills, plaster walls, a
foreground bank) are painted too, so that not every pixel belongs to an attribute.

Coordinates: row 0 is the top. ``hz`` is the horizon row; ``depth(y) = (y - hz) / (H - hz)`` is 0
at the horizon and 1 at the bottom row, and scales objects (perspective).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["RENDERED", "NOT_DISTINCT", "render_scene"]

#: Attributes without a visual identity of their own: modifiers of other surfaces or scene-level
#: layout properties. They can be rendered (``--attributes``), but overlap other attributes'
#: pixels or look like them, so they are left out of the default set.
NOT_DISTINCT: dict[str, str] = {
    "aged_worn": "a state of other surfaces (faded, scratched), drawn as an overlay on them",
    "dirty": "a state of other surfaces (stains), drawn as an overlay on them",
    "rusty": "a state of metal (orange speckle), drawn as an overlay on other surfaces",
    "cluttered_space": "a scene-level layout property; drawn as a pile of random small shapes, "
    "which resembles flowers, social and transport",
}

_Colour = tuple[float, float, float]
_SKIES: tuple[tuple[_Colour, _Colour], ...] = (
    ((0.22, 0.42, 0.82), (0.66, 0.80, 0.95)),  # clear
    ((0.50, 0.62, 0.80), (0.84, 0.87, 0.90)),  # pale
    ((0.30, 0.30, 0.52), (0.93, 0.68, 0.45)),  # dusk
    ((0.58, 0.60, 0.64), (0.76, 0.78, 0.80)),  # overcast
)
_GROUNDS: tuple[_Colour, ...] = ((0.42, 0.41, 0.30), (0.45, 0.40, 0.35), (0.33, 0.37, 0.30))
_VIVID: tuple[_Colour, ...] = (
    (0.85, 0.12, 0.12), (0.12, 0.30, 0.80), (0.95, 0.80, 0.10), (0.92, 0.92, 0.92),
    (0.10, 0.55, 0.25), (0.95, 0.50, 0.10), (0.55, 0.20, 0.65), (0.15, 0.15, 0.17),
)
_SKIN: tuple[_Colour, ...] = ((0.95, 0.80, 0.65), (0.80, 0.60, 0.45), (0.55, 0.38, 0.25), (0.35, 0.24, 0.16))


class _Canvas:
    """The image being painted plus the per-attribute ownership masks."""

    def __init__(
        self, rng: np.random.Generator, height: int, width: int, names: Sequence[str],
        hidden: Collection[str] = (),
    ) -> None:
        self.rng = rng
        self.hidden = frozenset(hidden)  # attributes whose paint is skipped (all draws still made)
        self.h, self.w = height, width
        self.img = np.zeros((height, width, 3), np.float32)
        self.owner = np.full((height, width), -1, np.int16)  # attribute owning each pixel, -1: none
        self.overlays: dict[int, np.ndarray] = {}  # attribute -> (H, W) bool, non-exclusive
        self.index = {n: i for i, n in enumerate(names)}
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float32)
        self.hz = int(round(height * rng.uniform(0.28, 0.6)))
        self.sky = _SKIES[rng.integers(len(_SKIES))]
        self.px = max(1, round(min(height, width) / 128))  # one "line" at this resolution

    # -- geometry ---------------------------------------------------------------------------
    def depth(self, y: float) -> float:
        return float(np.clip((y - self.hz) / max(1, self.h - self.hz), 0.0, 1.0))

    def scale(self, y: float) -> float:
        """Perspective size factor of an object standing on row ``y``."""
        return 0.5 + self.depth(y)

    def ground_y(self, lo: float = 0.05, hi: float = 1.0) -> float:
        """A random row below the horizon, between depths ``lo`` and ``hi``."""
        return self.hz + self.rng.uniform(lo, hi) * (self.h - self.hz)

    def draw(self, fn: Callable[[ImageDraw.ImageDraw], None]) -> np.ndarray:
        """(H, W) bool mask of what ``fn`` draws with fill 255 on a blank layer."""
        layer = Image.new("L", (self.w, self.h), 0)
        fn(ImageDraw.Draw(layer))
        return np.asarray(layer) > 127

    # -- textures ---------------------------------------------------------------------------
    def smooth(self, cell_y: float, cell_x: float | None = None) -> np.ndarray:
        """(H, W) float32 smooth noise, about N(0, 1), correlated over ``cell`` pixels."""
        cx = cell_y if cell_x is None else cell_x
        gh = int(self.h / max(cell_y, 1.0)) + 2
        gw = int(self.w / max(cx, 1.0)) + 2
        g = self.rng.standard_normal((gh, gw), dtype=np.float32)
        out = Image.fromarray(g).resize((self.w, self.h), Image.BILINEAR, box=(0, 0, gw - 1, gh - 1))
        return np.asarray(out, dtype=np.float32)

    def fine(self) -> np.ndarray:
        return self.rng.standard_normal((self.h, self.w), dtype=np.float32)

    def jitter(self, rgb: Sequence[float], s: float = 0.05) -> np.ndarray:
        return np.clip(np.asarray(rgb, np.float32) + self.rng.normal(0, s, 3).astype(np.float32), 0, 1)

    def wave(self, cell: float, amp: float) -> np.ndarray:
        """(W,) smooth 1-D profile with about ``amp`` pixels of amplitude."""
        n = int(self.w / cell) + 2
        g = self.rng.standard_normal(n)
        return np.interp(np.linspace(0, n - 1, self.w), np.arange(n), g).astype(np.float32) * amp

    # -- painting ---------------------------------------------------------------------------
    def paint(
        self, region: np.ndarray, colour: np.ndarray, name: str | None, *, exclusive: bool = True
    ) -> None:
        """Paint ``region`` (H, W) with ``colour`` ((3,) or (H, W, 3)); ``name`` owns it.

        ``exclusive`` regions hide whatever was below (occlusion); overlays add their attribute
        without removing the owners underneath. A ``hidden`` attribute paints nothing: what was
        below shows, and every random draw made for it is still made, so the rest is unchanged.
        """
        if not region.any() or name in self.hidden:
            return
        self.img[region] = colour if colour.ndim == 1 else colour[region]
        k = self.index.get(name) if name is not None else None
        if exclusive:
            self.owner[region] = -1 if k is None else k
            for m in self.overlays.values():
                m &= ~region
        elif k is not None:
            self.overlays[k] = self.overlays.get(k, np.zeros_like(region)) | region

    def mask_of(self, name: str) -> np.ndarray:
        """(H, W) bool: where attribute ``name`` is visible now."""
        k = self.index.get(name)
        if k is None:
            return np.zeros((self.h, self.w), bool)
        return (self.owner == k) | self.overlays.get(k, False)

    def masks(self) -> np.ndarray:
        """(K, H, W) bool visibility masks."""
        out = self.owner[None, :, :] == np.arange(len(self.index), dtype=np.int16)[:, None, None]
        for k, m in self.overlays.items():
            out[k] |= m
        return out


def _shade(base: np.ndarray, *fields: tuple[np.ndarray, float]) -> np.ndarray:
    """(H, W, 3) texture: ``base`` times (1 + sum of amplitude * field)."""
    f = np.ones_like(fields[0][0]) if fields else None
    for field, amp in fields:
        f = f + amp * field
    return np.clip(base[None, None, :] * f[..., None], 0, 1)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of two colours (3,) by t (H, W) in [0, 1]."""
    t = np.clip(t, 0, 1)[..., None]
    return a[None, None, :] * (1 - t) + b[None, None, :] * t


# ---------------------------------------------------------------------------------------------
# background (not attributes)

def _background(cv: _Canvas) -> None:
    top, low = (np.asarray(c, np.float32) for c in cv.sky)
    t = np.clip(cv.yy / max(cv.hz, 1), 0, 1)
    cv.img[:] = _mix(top, low, t)
    g = cv.jitter(_GROUNDS[cv.rng.integers(len(_GROUNDS))], 0.04)
    ground = cv.yy >= cv.hz
    cv.paint(ground, _shade(g, (cv.smooth(10), 0.07), (cv.fine(), 0.03)), None)


def _far_hills(cv: _Canvas) -> None:
    """Rolling hills that hide the horizon line when 'horizon' is absent."""
    ridge = cv.hz - cv.h * cv.rng.uniform(0.03, 0.1) + cv.wave(cv.w / 4, cv.h * 0.03)
    region = (cv.yy >= ridge[None, :]) & (cv.yy <= cv.hz + cv.px)
    col = cv.jitter((0.36, 0.45, 0.44), 0.04)
    cv.paint(region, _shade(col, (cv.smooth(6), 0.06)), None)


def _foreground_bank(cv: _Canvas) -> None:
    """A dark, plain occluder entering from a bottom corner."""
    cx = cv.w * (0 if cv.rng.random() < 0.5 else 1)
    rx, ry = cv.w * cv.rng.uniform(0.2, 0.45), cv.h * cv.rng.uniform(0.1, 0.3)
    edge = cv.smooth(4)
    region = ((cv.xx - cx) / rx) ** 2 + ((cv.yy - cv.h) / ry) ** 2 + 0.15 * edge < 1
    cv.paint(region, _shade(cv.jitter((0.14, 0.13, 0.11), 0.02), (cv.fine(), 0.05)), None)


# ---------------------------------------------------------------------------------------------
# sky and far layer

def _clouds(cv: _Canvas, name: str) -> None:
    for _ in range(cv.rng.integers(1, 5)):
        cy = cv.rng.uniform(0.05, 0.85) * cv.hz
        cx = cv.rng.uniform(0, cv.w)
        size = cv.w * cv.rng.uniform(0.08, 0.18)
        blobs = [
            (cx + cv.rng.uniform(-2, 2) * size, cy + cv.rng.uniform(-0.4, 0.2) * size,
             size * cv.rng.uniform(0.6, 1.1), size * cv.rng.uniform(0.4, 0.7))
            for _ in range(cv.rng.integers(3, 7))
        ]

        def fn(d: ImageDraw.ImageDraw) -> None:
            for x, y, rx, ry in blobs:
                d.ellipse((x - rx, y - ry, x + rx, y + ry), fill=255)

        region = cv.draw(fn) & (cv.yy < cv.hz)
        shade = np.clip((cv.yy - (cy - size)) / (2 * size), 0, 1)  # lighter on top
        tex = _mix(cv.jitter((0.97, 0.97, 0.98), 0.02), cv.jitter((0.70, 0.72, 0.76), 0.03), shade)
        cv.paint(region, tex, name)


def _rugged(cv: _Canvas, name: str) -> None:
    """A jagged mountain range rising above the horizon."""
    x0, span = cv.rng.uniform(-0.2, 0.5) * cv.w, cv.rng.uniform(0.5, 1.0) * cv.w
    prof = np.zeros(cv.w, np.float32)
    xs = np.arange(cv.w, dtype=np.float32)
    for _ in range(cv.rng.integers(3, 8)):
        px = x0 + cv.rng.uniform(0, span)
        ph = cv.h * cv.rng.uniform(0.08, 0.3)
        slope = ph / (cv.w * cv.rng.uniform(0.08, 0.2))
        prof = np.maximum(prof, ph - slope * np.abs(xs - px))
    prof = prof + np.abs(cv.rng.standard_normal(cv.w)).astype(np.float32) * cv.h * 0.012 * (prof > 0)
    top = cv.hz - prof
    region = (prof[None, :] > 1) & (cv.yy >= top[None, :]) & (cv.yy <= cv.hz + cv.px)
    lit = (np.gradient(prof)[None, :] > 0).astype(np.float32)  # sun from the left
    col = cv.jitter((0.44, 0.40, 0.44), 0.05)
    tex = _shade(col, (cv.smooth(8, 1.5), 0.18), (lit, 0.25), (cv.fine(), 0.05))
    cv.paint(region, tex, name)


def _horizon(cv: _Canvas, name: str) -> None:
    """A straight, flat horizon: bright haze line over a distant pale band, full width."""
    band = max(2, round(cv.h * cv.rng.uniform(0.025, 0.05)))
    region = (cv.yy >= cv.hz - cv.px) & (cv.yy < cv.hz + band)
    t = np.clip((cv.yy - cv.hz) / band, 0, 1)
    tex = _mix(cv.jitter((0.92, 0.93, 0.95), 0.02), cv.jitter((0.55, 0.63, 0.72), 0.04), t)
    cv.paint(region, tex, name)


# ---------------------------------------------------------------------------------------------
# ground covers

def _band(
    cv: _Canvas, *, start: tuple[float, float] = (0.0, 0.6), thick: tuple[float, float] = (0.25, 0.7)
) -> np.ndarray:
    """A wavy horizontal band of the ground (depths from ``start``, ``thick``), full width or a span."""
    d0 = cv.rng.uniform(*start)
    d1 = min(1.05, d0 + cv.rng.uniform(*thick))
    gh = cv.h - cv.hz
    y0 = cv.hz + d0 * gh + cv.wave(cv.w / 3, gh * 0.05)
    y1 = cv.hz + d1 * gh + cv.wave(cv.w / 3, gh * 0.06)
    region = (cv.yy >= y0[None, :]) & (cv.yy < y1[None, :]) & (cv.yy >= cv.hz)
    if cv.rng.random() < 0.4:
        a = cv.rng.uniform(0, 0.5) * cv.w
        region &= (cv.xx >= a) & (cv.xx < a + cv.rng.uniform(0.45, 1.0) * cv.w)
    return region


def _ocean(cv: _Canvas, name: str) -> None:
    gh = cv.h - cv.hz
    shore = cv.hz + cv.rng.uniform(0.25, 0.75) * gh + cv.wave(cv.w / 3, gh * 0.05)
    region = (cv.yy >= cv.hz) & (cv.yy < shore[None, :])
    d = np.clip((cv.yy - cv.hz) / gh, 0.02, 1)
    waves = np.sin(2 * np.pi * (np.log(d) * cv.rng.uniform(4, 7)) + cv.smooth(20, 3) * 2)
    caps = (cv.smooth(1, 6) > 2.0).astype(np.float32)
    tex = _shade(cv.jitter((0.10, 0.30, 0.55), 0.04), (waves, 0.12), (cv.fine(), 0.03))
    tex = tex + caps[..., None] * (0.9 - tex) * 0.8
    cv.paint(region, tex, name)


def _still_water(cv: _Canvas, name: str) -> None:
    gh = cv.h - cv.hz
    cy = cv.hz + cv.rng.uniform(0.25, 0.8) * gh
    ry = cv.rng.uniform(0.08, 0.22) * gh + 2
    cx, rx = cv.rng.uniform(0.2, 0.8) * cv.w, cv.rng.uniform(0.2, 0.5) * cv.w
    edge = cv.smooth(6) * 0.12
    region = (((cv.xx - cx) / rx) ** 2 + ((cv.yy - cy) / ry) ** 2 + edge < 1) & (cv.yy > cv.hz + cv.px)
    sky = np.asarray(cv.sky[1], np.float32)
    col = np.clip(0.3 * sky + 0.7 * cv.jitter((0.35, 0.52, 0.65), 0.04), 0, 1)
    rim = np.clip(((cv.xx - cx) / rx) ** 2 + ((cv.yy - cy) / ry) ** 2, 0, 1)
    ripples = np.sin(cv.yy * (2 * np.pi / max(2.0, 2.5 * cv.px)))
    tex = _shade(col, (rim, -0.2), (ripples, 0.03))
    cv.paint(region, tex, name)


def _running_water(cv: _Canvas, name: str) -> None:
    gh = cv.h - cv.hz
    if cv.rng.random() < 0.3:  # waterfall: a narrow vertical sheet
        x0 = cv.rng.uniform(0.15, 0.8) * cv.w
        w = cv.rng.uniform(0.06, 0.15) * cv.w
        y0 = cv.hz - cv.rng.uniform(0.0, 0.15) * cv.h
        y1 = cv.hz + cv.rng.uniform(0.3, 0.9) * gh
        region = (cv.xx >= x0) & (cv.xx < x0 + w) & (cv.yy >= y0) & (cv.yy < y1)
    else:  # river: narrow far away, wide and meandering close by
        d = np.clip((cv.yy - cv.hz) / gh, 0, 1)
        centre = cv.rng.uniform(0.25, 0.75) * cv.w + cv.rng.uniform(0.1, 0.3) * cv.w * d * np.sin(
            d * cv.rng.uniform(4, 9) + cv.rng.uniform(0, 6.3)
        )
        half = cv.w * (0.01 + cv.rng.uniform(0.08, 0.18) * d)
        start = cv.hz + cv.rng.uniform(0.0, 0.3) * gh
        region = (np.abs(cv.xx - centre) < half) & (cv.yy >= start)
    foam = (cv.smooth(6, 1) > 0.6).astype(np.float32)
    tex = _shade(cv.jitter((0.45, 0.62, 0.72), 0.04), (cv.smooth(5, 1), 0.1))
    tex = tex + foam[..., None] * (0.95 - tex) * 0.85
    cv.paint(region, tex, name)


def _ice_snow(cv: _Canvas, name: str) -> None:
    region = _band(cv)
    blue = cv.smooth(12)
    tex = _mix(cv.jitter((0.94, 0.95, 0.98), 0.015), cv.jitter((0.74, 0.81, 0.92), 0.03), 0.5 + 0.35 * blue)
    sparkle = (cv.fine() > 2.6)[..., None]
    cv.paint(region, np.where(sparkle, 1.0, tex).astype(np.float32), name)


def _grass(cv: _Canvas, name: str) -> None:
    blades = cv.smooth(3 * cv.px, 0.7)
    tex = _shade(cv.jitter((0.25, 0.50, 0.15), 0.05), (blades, 0.2), (cv.smooth(10), 0.1))
    cv.paint(_band(cv), tex, name)


def _sand(cv: _Canvas, name: str) -> None:
    ripples = np.sin(cv.yy * (2 * np.pi / (3.0 * cv.px)) + cv.smooth(12) * 3)
    tex = _shade(cv.jitter((0.86, 0.76, 0.56), 0.03), (ripples, 0.05), (cv.fine(), 0.04))
    cv.paint(_band(cv), tex, name)


def _dry(cv: _Canvas, name: str) -> None:
    cracks = (np.abs(cv.smooth(5 * cv.px)) < 0.12)[..., None]
    base = _shade(cv.jitter((0.72, 0.56, 0.30), 0.04), (cv.smooth(10), 0.08), (cv.fine(), 0.04))
    tex = np.where(cracks, base * 0.45, base).astype(np.float32)
    cv.paint(_band(cv), tex, name)


def _farming(cv: _Canvas, name: str) -> None:
    """Fields of crop rows, converging to the horizon (or contour rows), near or far."""
    region = _band(cv, start=(0.0, 0.75), thick=(0.15, 0.45))
    if cv.rng.random() < 0.7:
        vx = cv.rng.uniform(0.1, 0.9) * cv.w
        u = (cv.xx - vx) / (cv.yy - cv.hz + cv.h * 0.05)
        stripes = np.floor(u * cv.rng.uniform(4, 8)) % 2
    else:
        period = cv.rng.uniform(2.5, 4) * cv.px
        stripes = np.floor((cv.yy + cv.smooth(30) * 2) / period) % 2
    if cv.rng.random() < 0.5:
        a, b = cv.jitter((0.35, 0.56, 0.20), 0.04), cv.jitter((0.45, 0.32, 0.20), 0.04)
    else:
        a, b = cv.jitter((0.88, 0.76, 0.35), 0.04), cv.jitter((0.60, 0.45, 0.25), 0.04)
    cv.paint(region, _mix(a, b, stripes), name)


def _digging(cv: _Canvas, name: str) -> None:
    """An excavation: a dark pit with a heap of fresh soil beside it."""
    y = cv.ground_y(0.3, 0.85)
    s = cv.scale(y)
    w, h = cv.w * cv.rng.uniform(0.25, 0.4) * s, cv.h * cv.rng.uniform(0.06, 0.1) * s
    x = cv.rng.uniform(0.05, 0.95) * cv.w - w / 2
    corners = [(x, y - h), (x + w, y - h), (x + 0.8 * w, y), (x + 0.2 * w, y)]
    pit = cv.draw(lambda d: d.polygon(corners, fill=255))
    t = np.clip((cv.yy - (y - h)) / max(h, 1), 0, 1)
    bottom = np.array([0.12, 0.08, 0.05], np.float32)
    cv.paint(pit, _mix(cv.jitter((0.35, 0.24, 0.14), 0.03), bottom, t), name)
    mx = x + w * (1.1 if cv.rng.random() < 0.5 else -0.4)
    mw, mh = w * 0.5, h * 1.4
    heap = cv.draw(lambda d: d.pieslice((mx - mw / 2, y - mh, mx + mw / 2, y + mh), 180, 360, fill=255))
    tex = _shade(cv.jitter((0.62, 0.43, 0.26), 0.04), (cv.smooth(1.5 * cv.px), 0.18))
    cv.paint(heap, tex, name)


# ---------------------------------------------------------------------------------------------
# paths

def _perspective_strip(cv: _Canvas, half_bottom: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(region, centre x per row, half width per row) of a strip from the bottom to the horizon."""
    vx = cv.rng.uniform(0.2, 0.8) * cv.w
    bx = cv.rng.uniform(0.1, 0.9) * cv.w
    d = np.clip((cv.yy - cv.hz) / (cv.h - cv.hz), 0, 1)
    centre = vx + (bx - vx) * d
    half = half_bottom * d + 0.5
    return (np.abs(cv.xx - centre) < half) & (cv.yy > cv.hz), centre, half


def _flat_strip(cv: _Canvas, rel: float) -> tuple[np.ndarray, float, float]:
    """(region, top row, thickness) of a strip crossing the ground horizontally."""
    y = cv.ground_y(0.1, 0.8)
    thick = max(2.0, cv.h * rel * (0.3 + cv.depth(y)))
    return (cv.yy >= y) & (cv.yy < y + thick), y, thick


def _road(cv: _Canvas, name: str) -> None:
    asphalt = _shade(cv.jitter((0.30, 0.30, 0.32), 0.03), (cv.fine(), 0.06))
    line = cv.jitter((0.95, 0.90, 0.55) if cv.rng.random() < 0.5 else (0.95, 0.95, 0.95), 0.02)
    if cv.rng.random() < 0.65:
        region, centre, half = _perspective_strip(cv, cv.rng.uniform(0.15, 0.3) * cv.w)
        dash = np.floor(np.log(np.maximum(cv.yy - cv.hz, 1)) * 5) % 2 == 0
        marks = (np.abs(cv.xx - centre) < np.maximum(0.5, half * 0.05)) & dash
    else:
        region, y, thick = _flat_strip(cv, 0.1)
        marks = (np.abs(cv.yy - (y + thick / 2)) < max(0.5, thick * 0.06)) & (
            np.floor(cv.xx / (4 * cv.px)) % 2 == 0
        )
    cv.paint(region, asphalt, name)
    cv.paint(region & marks, line, name)


def _railroad(cv: _Canvas, name: str) -> None:
    gravel = _shade(cv.jitter((0.50, 0.47, 0.43), 0.03), (cv.fine(), 0.15))
    sleeper = cv.jitter((0.35, 0.24, 0.15), 0.03)
    rail = cv.jitter((0.78, 0.78, 0.80), 0.02)
    if cv.rng.random() < 0.6:
        region, centre, half = _perspective_strip(cv, cv.rng.uniform(0.08, 0.16) * cv.w)
        ties = np.floor(np.log(np.maximum(cv.yy - cv.hz, 1)) * 14) % 2 == 0
        off = np.abs(np.abs(cv.xx - centre) - half * 0.6)
        rails = off < np.maximum(0.5, half * 0.06)
        ties &= np.abs(cv.xx - centre) < half * 0.85
    else:
        region, y, thick = _flat_strip(cv, 0.06)
        ties = np.floor(cv.xx / (2 * cv.px)) % 2 == 0
        mid = y + thick / 2
        rails = np.abs(np.abs(cv.yy - mid) - thick * 0.3) < max(0.5, thick * 0.08)
    cv.paint(region, gravel, name)
    cv.paint(region & ties, sleeper, name)
    cv.paint(region & rails, rail, name)


def _person(d: ImageDraw.ImageDraw, x: float, y: float, h: float, *, limb: int) -> None:
    """A small standing figure on the ground at (x, y), height h (one mask layer)."""
    r = h * 0.11
    d.ellipse((x - r, y - h, x + r, y - h + 2 * r), fill=255)
    d.rectangle((x - h * 0.14, y - h + 2 * r, x + h * 0.14, y - h * 0.45), fill=255)
    d.line((x - h * 0.07, y - h * 0.45, x - h * 0.09, y), fill=255, width=limb)
    d.line((x + h * 0.07, y - h * 0.45, x + h * 0.09, y), fill=255, width=limb)


def _hiking(cv: _Canvas, name: str) -> None:
    """A narrow winding trail with a hiker (big backpack, walking stick)."""
    d = np.clip((cv.yy - cv.hz) / (cv.h - cv.hz), 0, 1)
    x0 = cv.rng.uniform(0.2, 0.8) * cv.w
    centre = x0 + cv.w * 0.15 * d * np.sin(d * cv.rng.uniform(6, 12) + cv.rng.uniform(0, 6.3))
    half = 0.5 + cv.w * cv.rng.uniform(0.025, 0.05) * d
    start = cv.hz + cv.rng.uniform(0.05, 0.3) * (cv.h - cv.hz)
    trail = (np.abs(cv.xx - centre) < half) & (cv.yy > start)
    edge = trail & (np.abs(cv.xx - centre) > half * 0.7) & (cv.fine() > 0)
    dirt = _shade(cv.jitter((0.78, 0.66, 0.48), 0.03), (cv.fine(), 0.05))
    cv.paint(trail, dirt, name)
    cv.paint(edge, dirt * 0.7, name)
    for _ in range(cv.rng.integers(1, 3)):
        y = cv.ground_y(0.35, 1.0)
        row = min(cv.h - 1, int(y))
        x = float(centre[row, 0])
        h = cv.h * cv.rng.uniform(0.15, 0.25) * cv.scale(y)
        body = cv.draw(lambda dr: _person(dr, x, y, h, limb=max(1, round(h * 0.08))))
        side = 1 if cv.rng.random() < 0.5 else -1
        pa, pb = sorted((x - side * h * 0.1, x - side * h * 0.32))
        pack = cv.draw(lambda dr: dr.rectangle((pa, y - h * 0.82, pb, y - h * 0.45), fill=255))
        stick = cv.draw(
            lambda dr: dr.line((x + side * h * 0.25, y - h * 0.7, x + side * h * 0.32, y), fill=255, width=1)
        )
        cv.paint(body, cv.jitter(_VIVID[cv.rng.integers(3)], 0.04), name)
        pack_colour = (0.95, 0.50, 0.10) if cv.rng.random() < 0.5 else (0.20, 0.45, 0.25)
        cv.paint(pack, cv.jitter(pack_colour, 0.04), name)
        cv.paint(stick, np.array([0.3, 0.2, 0.1], np.float32), name)


# ---------------------------------------------------------------------------------------------
# objects: each returns a list of (base row, painter) so that they can be sorted by depth

_Painter = Callable[[], None]


def _several(
    cv: _Canvas, lo: int, hi: int, one: Callable[[], tuple[float, _Painter]]
) -> list[tuple[float, _Painter]]:
    """``lo`` to ``hi - 1`` instances (random count) of an object, each made by ``one()``."""
    return [one() for _ in range(cv.rng.integers(lo, hi))]


def _trees(cv: _Canvas, name: str) -> list[tuple[float, _Painter]]:
    def one() -> tuple[float, _Painter]:
        y = cv.ground_y(0.0, 1.0)
        h = cv.h * cv.rng.uniform(0.25, 0.5) * cv.scale(y)
        x = cv.rng.uniform(0, cv.w)
        conifer = cv.rng.random() < 0.4

        def paint() -> None:
            tw = max(1.0, h * 0.07)
            trunk = cv.draw(lambda d: d.rectangle((x - tw, y - h * 0.35, x + tw, y), fill=255))
            cv.paint(trunk, cv.jitter((0.35, 0.24, 0.14), 0.03), name)
            if conifer:
                crown = cv.draw(lambda d: [
                    d.polygon([(x, y - h), (x - h * 0.25 * (i + 1) / 3, y - h * (0.55 - 0.12 * i)),
                               (x + h * 0.25 * (i + 1) / 3, y - h * (0.55 - 0.12 * i))], fill=255)
                    for i in range(3)
                ])
                col = cv.jitter((0.10, 0.28, 0.15), 0.03)
            else:
                blobs = [
                    (x + cv.rng.uniform(-0.2, 0.2) * h, y - h * cv.rng.uniform(0.55, 0.75),
                     h * cv.rng.uniform(0.15, 0.25))
                    for _ in range(4)
                ]
                crown = cv.draw(
                    lambda d: [d.ellipse((bx - r, by - r, bx + r, by + r), fill=255) for bx, by, r in blobs]
                )
                col = cv.jitter((0.16, 0.38, 0.12), 0.04)
            cv.paint(crown, _shade(col, (cv.fine(), 0.18), (cv.smooth(2 * cv.px), 0.15)), name)

        return y, paint

    return _several(cv, 1, 7, one)


def _rock_stone(cv: _Canvas, name: str) -> list[tuple[float, _Painter]]:
    def one() -> tuple[float, _Painter]:
        y = cv.ground_y(0.1, 1.0)
        r = cv.w * cv.rng.uniform(0.05, 0.12) * cv.scale(y)
        x = cv.rng.uniform(0, cv.w)
        ang = np.sort(cv.rng.uniform(0, 2 * np.pi, 9))
        rad = r * cv.rng.uniform(0.7, 1.0, 9)
        pts = [(x + a * np.cos(t), y - r * 0.6 + 0.6 * a * np.sin(t)) for t, a in zip(ang, rad)]

        def paint() -> None:
            region = cv.draw(lambda d: d.polygon(pts, fill=255))
            light = np.clip((cv.yy - (y - r * 1.2)) / (1.2 * r + 1), 0, 1)
            base = cv.jitter((0.52, 0.51, 0.49), 0.05)
            cv.paint(region, _shade(base, (light, -0.45), (cv.fine(), 0.12)), name)

        return y, paint

    return _several(cv, 1, 6, one)


def _flowers(cv: _Canvas, name: str) -> list[tuple[float, _Painter]]:
    def one() -> tuple[float, _Painter]:
        y = cv.ground_y(0.3, 1.0)
        rx, ry = cv.w * cv.rng.uniform(0.1, 0.25), cv.h * cv.rng.uniform(0.04, 0.09) * cv.scale(y)
        x = cv.rng.uniform(0, cv.w)

        def paint() -> None:
            region = cv.draw(lambda d: d.ellipse((x - rx, y - 2 * ry, x + rx, y), fill=255))
            cv.paint(region, _shade(cv.jitter((0.30, 0.50, 0.20), 0.04), (cv.fine(), 0.12)), name)
            dots = cv.smooth(cv.px * 0.8)
            colours = [cv.jitter(_VIVID[i], 0.03) for i in cv.rng.choice([0, 2, 3, 5, 6], 2, replace=False)]
            cv.paint(region & (dots > 1.0), colours[0], name)
            cv.paint(region & (dots < -1.2), colours[1], name)

        return y, paint

    return _several(cv, 1, 4, one)


def _fencing(cv: _Canvas, name: str) -> list[tuple[float, _Painter]]:
    y = cv.ground_y(0.2, 1.0)
    s = cv.scale(y)
    h = cv.h * cv.rng.uniform(0.08, 0.15) * s
    x0 = cv.rng.uniform(-0.2, 0.5) * cv.w
    x1 = x0 + cv.rng.uniform(0.4, 1.2) * cv.w
    step = max(3.0, cv.w * cv.rng.uniform(0.03, 0.06) * s)
    lw = max(1, round(h * 0.1))
    colour = cv.jitter((0.92, 0.92, 0.90) if cv.rng.random() < 0.5 else (0.45, 0.30, 0.18), 0.03)

    def paint() -> None:
        def fn(d: ImageDraw.ImageDraw) -> None:
            for px in np.arange(x0, x1, step):
                d.line((px, y - h, px, y), fill=255, width=lw)
            for ry in (y - h * 0.85, y - h * 0.4):
                d.line((x0, ry, x1, ry), fill=255, width=lw)

        cv.paint(cv.draw(fn), colour, name)

    return [(y, paint)]


def _transport(cv: _Canvas, name: str) -> list[tuple[float, _Painter]]:
    def one() -> tuple[float, _Painter]:
        y = cv.ground_y(0.15, 1.0)
        s = cv.scale(y)
        w = cv.w * (cv.rng.uniform(0.3, 0.45) if cv.rng.random() < 0.3 else cv.rng.uniform(0.15, 0.25)) * s
        h = w * cv.rng.uniform(0.35, 0.5)
        x = cv.rng.uniform(-0.1, 1.0) * cv.w

        def paint() -> None:
            r = h * 0.22
            body = cv.draw(
                lambda d: d.rounded_rectangle((x, y - h, x + w, y - r), radius=max(1, h * 0.2), fill=255)
            )
            glass = cv.draw(
                lambda d: d.rectangle((x + w * 0.15, y - h * 0.92, x + w * 0.85, y - h * 0.6), fill=255)
            )
            hubs = (x + w * 0.22, x + w * 0.78)
            wheels = cv.draw(lambda d: [d.ellipse((cx - r, y - 2 * r, cx + r, y), fill=255) for cx in hubs])
            shine = np.clip(1 - (cv.yy - (y - h)) / max(h, 1), 0, 1)
            cv.paint(body, _shade(cv.jitter(_VIVID[cv.rng.integers(len(_VIVID))], 0.04), (shine, 0.25)), name)
            cv.paint(glass & body, cv.jitter((0.16, 0.20, 0.28), 0.03), name)
            cv.paint(wheels, np.array([0.05, 0.05, 0.05], np.float32), name)

        return y, paint

    return _several(cv, 1, 4, one)


def _building_box(
    cv: _Canvas, wrel: tuple[float, float], aspect: tuple[float, float]
) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of a random building standing on the ground."""
    y1 = cv.ground_y(0.0, 0.9)
    s = cv.scale(y1)
    w = cv.w * cv.rng.uniform(*wrel) * s
    h = w * cv.rng.uniform(*aspect)
    x0 = cv.rng.uniform(-0.1, 1.0) * cv.w - w / 2
    return x0, y1 - h, x0 + w, y1


def _rect(cv: _Canvas, box: tuple[float, float, float, float]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return (cv.xx >= x0) & (cv.xx < x1) & (cv.yy >= y0) & (cv.yy < y1)


def _wood(cv: _Canvas, name: str) -> list[tuple[float, _Painter]]:
    box = _building_box(cv, (0.25, 0.45), (0.5, 0.9))

    def paint() -> None:
        planks = (np.floor((cv.yy - box[1]) / (2.5 * cv.px)) % 2) * 2 - 1
        grain = cv.smooth(1, 8)
        tex = _shade(cv.jitter((0.55, 0.37, 0.19), 0.04), (planks, 0.08), (grain, 0.1))
        gaps = (cv.yy - box[1]) % (2.5 * cv.px) < 0.6
        cv.paint(_rect(cv, box), np.where(gaps[..., None], tex * 0.55, tex).astype(np.float32), name)

    return [(box[3], paint)]


def _brick(cv: _Canvas, name: str) -> list[tuple[float, _Painter]]:
    box = _building_box(cv, (0.25, 0.5), (0.5, 1.0))

    def paint() -> None:
        bh = max(2.0, 2.0 * cv.px)
        row = np.floor((cv.yy - box[1]) / bh)
        u = (cv.xx - box[0]) / (2 * bh) + 0.5 * (row % 2)  # brick column coordinate (staggered)
        mortar = ((cv.yy - box[1]) % bh < 0.7 * cv.px) | (u % 1 < 0.35 / bh)
        per_brick = np.sin(row * 12.9898 + np.floor(u) * 78.233) * 43758.5453 % 1 - 0.5  # hash
        tex = _shade(cv.jitter((0.66, 0.30, 0.20), 0.04), (per_brick.astype(np.float32), 0.25))
        tex[mortar] = cv.jitter((0.76, 0.73, 0.68), 0.02)
        cv.paint(_rect(cv, box), tex, name)

    return [(box[3], paint)]


def _shingles(cv: _Canvas, name: str) -> list[tuple[float, _Painter]]:
    """A house: plaster walls (no attribute) under a shingled roof."""
    x0, y0, x1, y1 = _building_box(cv, (0.22, 0.4), (0.4, 0.6))
    rh = (x1 - x0) * cv.rng.uniform(0.35, 0.55)

    def paint() -> None:
        plaster = _shade(cv.jitter((0.86, 0.80, 0.68), 0.05), (cv.fine(), 0.02))
        cv.paint(_rect(cv, (x0, y0, x1, y1)), plaster, None)
        o = (x1 - x0) * 0.08
        inset = (x1 - x0) * 0.2
        outline = [(x0 - o, y0), (x1 + o, y0), (x1 - inset, y0 - rh), (x0 + inset, y0 - rh)]
        roof = cv.draw(lambda d: d.polygon(outline, fill=255))
        sh = max(2.0, 2.0 * cv.px)
        row = np.floor((cv.yy - y0) / sh)
        scallop = ((cv.xx + 0.5 * sh * (row % 2)) % sh) / sh
        lines = ((cv.yy - y0) % sh) / sh
        base = cv.jitter((0.30, 0.30, 0.35) if cv.rng.random() < 0.5 else (0.62, 0.30, 0.20), 0.03)
        tex = _shade(base, (lines.astype(np.float32), -0.4), (np.abs(scallop - 0.5).astype(np.float32), 0.3))
        cv.paint(roof, tex, name)

    return [(y1, paint)]


def _metal(cv: _Canvas, name: str) -> list[tuple[float, _Painter]]:
    """A corrugated shed or a silo: grey-blue with vertical ribs and a specular band."""
    silo = cv.rng.random() < 0.4
    box = _building_box(cv, (0.1, 0.18), (1.5, 3.0)) if silo else _building_box(cv, (0.25, 0.45), (0.4, 0.7))

    def paint() -> None:
        x0, y0, x1, y1 = box
        u = (cv.xx - x0) / max(x1 - x0, 1)
        ribs = np.sin(cv.xx * (2 * np.pi / (2.0 * cv.px)))
        spec = np.exp(-(((u - cv.rng.uniform(0.2, 0.5)) / 0.08) ** 2))
        tex = _shade(
            cv.jitter((0.58, 0.61, 0.66), 0.04),
            (ribs, 0.1), (spec.astype(np.float32), 0.45), (u.astype(np.float32), -0.25),
        )
        region = _rect(cv, box)
        if silo:
            r = (x1 - x0) / 2
            region |= cv.draw(lambda d: d.pieslice((x0, y0 - r * 0.6, x1, y0 + r * 0.6), 180, 360, fill=255))
        cv.paint(region, tex, name)

    return [(box[3], paint)]


def _glass(cv: _Canvas, name: str) -> list[tuple[float, _Painter]]:
    """A glass tower: reflective cyan panels in a dark frame grid."""
    box = _building_box(cv, (0.12, 0.25), (1.5, 3.0))

    def paint() -> None:
        x0, y0, x1, y1 = box
        cell = max(3.0, 3.5 * cv.px)
        frame = ((cv.xx - x0) % cell < 0.8 * cv.px) | ((cv.yy - y0) % cell < 0.8 * cv.px)
        diag = np.clip(((cv.xx - x0) + (cv.yy - y0)) / max(x1 - x0 + y1 - y0, 1), 0, 1)
        tex = _mix(cv.jitter((0.70, 0.85, 0.92), 0.03), cv.jitter((0.22, 0.45, 0.62), 0.04), diag)
        tex[frame] = cv.jitter((0.18, 0.20, 0.23), 0.02)
        cv.paint(_rect(cv, box), tex, name)

    return [(box[3], paint)]


def _cloth(cv: _Canvas, name: str) -> list[tuple[float, _Painter]]:
    """Striped tents and awnings in two bold colours."""
    def one() -> tuple[float, _Painter]:
        y = cv.ground_y(0.1, 1.0)
        s = cv.scale(y)
        w = cv.w * cv.rng.uniform(0.12, 0.25) * s
        h = w * cv.rng.uniform(0.6, 1.0)
        x = cv.rng.uniform(0, cv.w)
        i, j = cv.rng.choice([0, 1, 2, 3, 4, 5, 6], 2, replace=False)

        def paint() -> None:
            region = cv.draw(lambda d: d.polygon([(x - w / 2, y), (x + w / 2, y), (x, y - h)], fill=255))
            stripes = np.floor((cv.xx - x) / max(1.5, 1.5 * cv.px)) % 2
            folds = np.sin((cv.xx - x) * (2 * np.pi / max(2.0, w / 3)))
            tex = _mix(cv.jitter(_VIVID[i], 0.03), cv.jitter(_VIVID[j], 0.03), stripes)
            tex = tex * (1 + 0.12 * folds[..., None])
            cv.paint(region, np.clip(tex, 0, 1).astype(np.float32), name)

        return y, paint

    return _several(cv, 1, 4, one)


def _temple(cv: _Canvas, name: str) -> list[tuple[float, _Painter]]:
    """A classical temple: steps, columns with dark gaps, entablature and pediment."""
    x0, y0, x1, y1 = _building_box(cv, (0.35, 0.6), (0.45, 0.65))

    def paint() -> None:
        w, h = x1 - x0, y1 - y0
        stone = cv.jitter((0.88, 0.85, 0.74), 0.04)
        n = int(cv.rng.integers(4, 8))
        pitch = w / n

        def fn(d: ImageDraw.ImageDraw) -> None:
            d.rectangle((x0, y1 - h * 0.12, x1, y1), fill=255)  # steps
            d.rectangle((x0 + w * 0.03, y0 + h * 0.25, x1 - w * 0.03, y1 - h * 0.12), fill=255)
            d.polygon([(x0, y0 + h * 0.26), (x1, y0 + h * 0.26), ((x0 + x1) / 2, y0)], fill=255)

        whole = cv.draw(fn)
        gaps = (
            (cv.yy > y0 + h * 0.36) & (cv.yy < y1 - h * 0.12)
            & (((cv.xx - x0 - w * 0.03) % pitch) > pitch * 0.45)
            & (cv.xx > x0 + w * 0.03) & (cv.xx < x1 - w * 0.03)
        )
        tex = _shade(stone, (cv.fine(), 0.03))
        tex[gaps] = stone * 0.25
        cv.paint(whole, tex, name)

    return [(y1, paint)]


def _social(cv: _Canvas, name: str) -> list[tuple[float, _Painter]]:
    """A group of people, standing close together."""
    y = cv.ground_y(0.2, 1.0)
    cx = cv.rng.uniform(0.1, 0.9) * cv.w
    s = cv.scale(y)
    people = []
    for _ in range(cv.rng.integers(3, 12)):
        h = cv.h * cv.rng.uniform(0.12, 0.2) * s
        people.append((cx + cv.rng.normal(0, cv.w * 0.08 * s), y + cv.rng.normal(0, cv.h * 0.02 * s), h))
    people.sort(key=lambda p: p[1])

    def paint() -> None:
        for px, py, h in people:
            limb = max(1, round(h * 0.09))
            body = cv.draw(lambda d: _person(d, px, py, h, limb=limb))
            head = body & (cv.yy < py - h + 2 * h * 0.11)
            cv.paint(body, cv.jitter(_VIVID[cv.rng.integers(len(_VIVID))], 0.05), name)
            cv.paint(head, cv.jitter(_SKIN[cv.rng.integers(len(_SKIN))], 0.03), name)

    return [(y, paint)]


def _cluttered(cv: _Canvas, name: str) -> list[tuple[float, _Painter]]:
    y = cv.ground_y(0.3, 1.0)
    s = cv.scale(y)
    w, h = cv.w * cv.rng.uniform(0.25, 0.45) * s, cv.h * cv.rng.uniform(0.1, 0.2) * s
    x = cv.rng.uniform(0, cv.w - w)

    def paint() -> None:
        for _ in range(cv.rng.integers(20, 60)):
            bx, by = x + cv.rng.uniform(0, w), y - cv.rng.uniform(0, h)
            r = cv.rng.uniform(1, 3) * cv.px
            box = (bx - r, by - r, bx + r, by + r)
            draw = "ellipse" if cv.rng.random() < 0.5 else "rectangle"
            shape = cv.draw(lambda d: getattr(d, draw)(box, fill=255))
            cv.paint(shape, cv.jitter(cv.rng.uniform(0.1, 0.9, 3), 0.0), name)

    return [(y, paint)]


# ---------------------------------------------------------------------------------------------
# overlays

def _wire(cv: _Canvas, name: str) -> None:
    """Power lines: sagging catenaries with their poles."""
    xs = np.linspace(-1, cv.w + 1, 64)
    ybase = cv.ground_y(0.2, 0.9)
    top = cv.rng.uniform(0.1, 0.7) * cv.hz + 2
    poles = [cv.rng.uniform(0.05, 0.95) * cv.w for _ in range(cv.rng.integers(0, 3))]
    colour = cv.jitter((0.10, 0.10, 0.10), 0.02)
    lines = []
    for _ in range(cv.rng.integers(1, 4)):
        y0 = top + cv.rng.uniform(-0.05, 0.05) * cv.h
        y1 = y0 + cv.rng.uniform(-0.15, 0.15) * cv.h
        sag = cv.rng.uniform(0.02, 0.1) * cv.h
        ys = y0 + (y1 - y0) * xs / cv.w + sag * (1 - (2 * xs / cv.w - 1) ** 2)
        lines.append(list(zip(xs.tolist(), ys.tolist())))

    def fn(d: ImageDraw.ImageDraw) -> None:
        for pts in lines:
            d.line(pts, fill=255, width=cv.px)
        for px in poles:
            d.line((px, top - 2 * cv.px, px, ybase), fill=255, width=max(1, 2 * cv.px))

    cv.paint(cv.draw(fn), colour, name)


def _modifier_target(cv: _Canvas, prefer: Sequence[str]) -> np.ndarray:
    for n in prefer:
        m = cv.mask_of(n)
        if m.any():
            return m
    return cv.yy >= cv.hz


_SURFACES = ("metal", "wood", "brick", "shingles", "temple", "transport", "glass", "road")


def _aged_worn(cv: _Canvas, name: str) -> None:
    target = _modifier_target(cv, cv.rng.permutation(_SURFACES).tolist())
    patch = target & (cv.smooth(6) > 0.3)
    grey = cv.img.mean(axis=2, keepdims=True)
    worn = np.clip(0.5 * cv.img + 0.5 * grey + 0.12, 0, 1)
    worn[cv.smooth(0.7, 6) > 1.8] *= 0.5  # scratches
    cv.paint(patch, worn.astype(np.float32), name, exclusive=False)


def _dirty(cv: _Canvas, name: str) -> None:
    target = _modifier_target(cv, cv.rng.permutation(_SURFACES).tolist())
    patch = target & (cv.smooth(4) > 0.6)
    stain = np.clip(cv.img * 0.55 + np.array([0.08, 0.05, 0.0], np.float32), 0, 1)
    cv.paint(patch, stain.astype(np.float32), name, exclusive=False)


def _rusty(cv: _Canvas, name: str) -> None:
    target = _modifier_target(cv, ["metal", "transport", "railroad", *cv.rng.permutation(_SURFACES).tolist()])
    patch = target & (cv.smooth(5) > 0.2)
    rust = _shade(cv.jitter((0.58, 0.28, 0.10), 0.04), (cv.fine(), 0.25))
    cv.paint(patch, rust, name, exclusive=False)


# ---------------------------------------------------------------------------------------------

_SKY = {"clouds": _clouds, "rugged_scene": _rugged}
_GROUND_FIRST = {"ocean": _ocean}
_GROUND = {"grass": _grass, "sand": _sand, "dry": _dry, "ice_snow": _ice_snow, "farming": _farming}
_GROUND_LAST = {"still_water": _still_water, "running_water": _running_water, "digging": _digging}
_PATHS = {"road": _road, "railroad": _railroad, "hiking": _hiking}
_OBJECTS = {
    "trees": _trees, "rock_stone": _rock_stone, "flowers": _flowers, "fencing_railing": _fencing,
    "transport": _transport, "wood": _wood, "brick": _brick, "shingles": _shingles, "metal": _metal,
    "glass": _glass, "cloth": _cloth, "temple": _temple, "social": _social, "cluttered_space": _cluttered,
}
_OVERLAYS = {"aged_worn": _aged_worn, "dirty": _dirty, "rusty": _rusty}

#: Every attribute this renderer can draw (the 33 of the SIAM paper).
RENDERED: frozenset[str] = frozenset(
    [*_SKY, *_GROUND_FIRST, *_GROUND, *_GROUND_LAST, *_PATHS, *_OBJECTS, *_OVERLAYS, "horizon", "wire"]
)


def _lighting(cv: _Canvas) -> np.ndarray:
    """Aerial haze, exposure, colour cast, smooth shading and sensor noise -> uint8 (H, W, 3)."""
    img = cv.img
    haze = np.clip(1 - (cv.yy - cv.hz) / max(1, cv.h - cv.hz), 0, 1) ** 3 * (cv.yy >= cv.hz) * 0.3
    img = img * (1 - haze[..., None]) + np.asarray(cv.sky[1], np.float32) * haze[..., None]
    gain = cv.rng.uniform(0.75, 1.15)
    tint = 1 + cv.rng.normal(0, 0.04, 3).astype(np.float32)
    field = 1 + 0.12 * cv.smooth(cv.h / 2)
    img = img * (gain * tint)[None, None, :] * field[..., None]
    img = img + cv.rng.uniform(0.005, 0.03) * cv.rng.standard_normal(img.shape, dtype=np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_scene(
    rng: np.random.Generator, present: Sequence[str], names: Sequence[str], *, height: int, width: int,
    hidden: Collection[str] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene showing the attributes ``present`` (a subset of ``names``).

    Returns ``(image, masks)``: uint8 (H, W, 3) and bool (K, H, W) with K = len(names); mask k
    holds the pixels where attribute ``names[k]`` is visible after occlusion (empty when fully
    hidden). Deterministic given the state of ``rng``.

    ``hidden``: attributes laid out as usual (same random draws, same layout of everything else)
    but not painted, so the scene is the same scene without them: their pixels show what was
    behind them, which may reveal attributes they covered. Non-attribute parts drawn with an
    attribute (a house's plaster walls under shingles) stay. Overlays (aged_worn, dirty, rusty)
    read the pixels and masks below them, so hiding a surface can change them.
    """
    unknown = sorted(set(present) - RENDERED)
    if unknown:
        raise ValueError(f"no renderer for attributes {unknown}; allowed: {sorted(RENDERED)}")
    cv = _Canvas(rng, height, width, names, hidden)
    want = set(present)
    _background(cv)
    for n, fn in _SKY.items():
        if n in want:
            fn(cv, n)
    if "horizon" not in want:
        _far_hills(cv)
    for table in (_GROUND_FIRST, _GROUND):
        order = [n for n in table if n in want]
        for n in (order if table is _GROUND_FIRST else rng.permutation(order).tolist()):
            table[n](cv, n)
    if "horizon" in want:
        _horizon(cv, "horizon")
    for table in (_GROUND_LAST, _PATHS):
        for n in table:
            if n in want:
                table[n](cv, n)
    objects: list[tuple[float, _Painter]] = []
    for n, fn in _OBJECTS.items():
        if n in want:
            objects.extend(fn(cv, n))
    for _, paint in sorted(objects, key=lambda o: o[0]):
        paint()
    if rng.random() < 0.2:
        _foreground_bank(cv)
    for n, fn in _OVERLAYS.items():
        if n in want:
            fn(cv, n)
    if "wire" in want:
        _wire(cv, "wire")
    return _lighting(cv), cv.masks()
