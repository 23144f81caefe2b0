"""The floor under a recording's people, found from their feet: the world frame of the exports.

The meshes of a recording stand in the camera's frame, so a tilted webcam tilts the floor, and
an avatar driven by them walks on a slope, its feet at the camera's height below the origin.
People stand on the floor: in every row whose feet are in the picture, the body's lowest vertex
(along "down") touches it. :func:`estimate_floor` takes those points over the whole recording,
fits a plane to them (RANSAC, then least squares on the inliers), takes its normal as the new
"down" and repeats, so the lowest vertex is the lowest along the floor's own normal. The result
gives the camera's height above the floor and its pitch and roll, and
:meth:`Floor.world` the Y-up frame on the floor below the camera (x right, y up, z back
towards the camera along the floor) that ``realtime.bvh`` and ``realtime.gltf`` write in.

Rows that cannot touch the floor in the image are left out: held rows (copies of an earlier
pose), boxes that reach the image's bottom edge (the feet are cut off and the network only
guesses them) and small boxes. Feet that cover too little of the floor to show its tilt (one
person standing still, or walking along one line: their spread across the floor under 0.25 m
in one direction) give only the camera's height, the camera taken as level. A person's depth
error moves their feet along the camera's rays,
which lifts or sinks their whole footprint by the same factor: RANSAC keeps the people who agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from realtime.motion import WorldFrame

logger = logging.getLogger(__name__)

INLIER_M = 0.05  # a lowest point within this of the plane agrees with it
MIN_ROWS = 150  # rows with the feet in view to trust a floor (a few frames' feet mislead)
MIN_INLIER_SHARE = 0.5
BOTTOM_MARGIN = 0.02  # share of the image height: boxes ending within it are cut off
MIN_BOX_PX = 48
MIN_SPREAD_M = 0.25  # std of the feet over the floor, in both directions, to show its tilt
MAX_TILT_DEG = 45.0  # a floor tilted more from the camera's up is a wrong fit
MAX_ROWS = 3000  # rows the fit reads at most (evenly spread)
CANDIDATES = 512  # vertices per row kept as candidates for the lowest (the feet)
CAMERA_UP = np.array([0.0, -1.0, 0.0])  # OpenCV camera axes: y down


@dataclass
class Floor:
    """The floor plane in the camera frame: unit normal f64[3] pointing up, and the camera's
    height above it (m); how many rows were used and agreed, and the inliers' RMS distance."""

    normal: np.ndarray
    height_m: float
    rows: int
    inliers: int
    rms_m: float
    level: bool = False  # the feet covered too little of the floor: the camera taken as level

    @property
    def pitch_deg(self) -> float:
        """How far the camera looks down (degrees; negative: up)."""
        return float(np.degrees(np.arcsin(np.clip(-self.normal[2], -1, 1))))

    @property
    def roll_deg(self) -> float:
        return float(np.degrees(np.arctan2(self.normal[0], -self.normal[1])))

    def world(self) -> WorldFrame:
        """The frame on the floor below the camera: y up (the normal), z towards the camera
        along the floor (against its forward direction), x = y cross z; the camera at
        (0, height, 0)."""
        y = self.normal / np.linalg.norm(self.normal)
        forward = np.array([0.0, 0.0, 1.0])
        f_h = forward - (forward @ y) * y
        if np.linalg.norm(f_h) < 1e-6:  # looking straight down: "forward" is the image's up
            image_up = np.array([0.0, -1.0, 0.0])
            f_h = image_up - (image_up @ y) * y
        z = -f_h / np.linalg.norm(f_h)
        x = np.cross(y, z)
        return WorldFrame(np.stack([x, y, z]), np.array([0.0, self.height_m, 0.0]))

    def describe(self) -> str:
        if self.level:
            return (
                f"the camera {self.height_m:.2f} m above the floor, taken as level: the feet "
                f"cover too little of the floor to show its tilt (from {self.inliers} of "
                f"{self.rows} rows with the feet in view, RMS {self.rms_m * 100:.1f} cm)"
            )
        return (
            f"the camera {self.height_m:.2f} m above the floor, looking down "
            f"{self.pitch_deg:.1f} deg, roll {self.roll_deg:.1f} deg (from {self.inliers} "
            f"of {self.rows} rows with the feet in view, RMS {self.rms_m * 100:.1f} cm)"
        )


def feet_in_view(boxes: np.ndarray, held: np.ndarray | None, image_h: float) -> np.ndarray:
    """bool[N]: the persons whose feet can touch the floor in the image (see module doc), from
    their boxes f[N,4] px and held flags bool[N] (None: none held)."""
    box = np.asarray(boxes, np.float64).reshape(-1, 4)
    ok = box[:, 3] < float(image_h) * (1.0 - BOTTOM_MARGIN)
    ok &= (box[:, 3] - box[:, 1]) >= MIN_BOX_PX
    if held is not None:
        ok &= ~np.asarray(held, bool).reshape(-1)
    return ok


def foot_rows(rec: dict[str, np.ndarray], image_wh: tuple[int, int]) -> np.ndarray:
    """Indices of the rows of a recording whose feet can touch the floor in the image."""
    return np.flatnonzero(feet_in_view(rec["box_xyxy"], rec.get("held"), image_wh[1]))


def posed_vertices(body: Any, rec: dict[str, np.ndarray], rows: np.ndarray, chunk: int = 64):
    """Yields f64[n,V,3] m: the meshes of ``rows`` in the camera frame, ``chunk`` at a time."""
    import torch

    for s in range(0, len(rows), chunk):
        r = rows[s : s + chunk]
        with torch.no_grad():
            out = body(
                torch.as_tensor(np.asarray(rec["rotmat"], np.float32)[r]),
                torch.as_tensor(np.asarray(rec["betas"], np.float32)[r]),
                torch.as_tensor(np.asarray(rec["transl_m"], np.float32)[r]),
            )
        yield out.vertices.double().numpy()


def fit_plane(
    points: np.ndarray, up_hint: np.ndarray, rng: np.random.Generator, iterations: int = 300
) -> tuple[np.ndarray, float, np.ndarray]:
    """RANSAC over ``points`` f[N,3], then least squares on the inliers: (unit normal on the
    side of ``up_hint``, d with n.p + d = 0, bool[N] inliers)."""
    pts = np.asarray(points, np.float64)
    best = np.zeros(len(pts), bool)
    for _ in range(iterations):
        a, b, c = pts[rng.choice(len(pts), 3, replace=False)]
        n = np.cross(b - a, c - a)
        if np.linalg.norm(n) < 1e-9:
            continue
        n /= np.linalg.norm(n)
        inl = np.abs((pts - a) @ n) < INLIER_M
        if inl.sum() > best.sum():
            best = inl
    if best.sum() < 3:
        best[:] = True
    for _ in range(3):  # least squares on the inliers, then the inliers again
        centre = pts[best].mean(0)
        n = np.linalg.svd(pts[best] - centre)[2][-1]
        n = n if n @ up_hint > 0 else -n
        d = -float(n @ centre)
        new = np.abs(pts @ n + d) < INLIER_M
        if new.sum() < 3 or (new == best).all():
            break
        best = new
    return n, d, best


def estimate_floor(
    rec: dict[str, np.ndarray], body: Any, image_wh: tuple[int, int], seed: int = 0
) -> Floor:
    """The floor of a recording (see module doc). Raises ValueError, saying why, when too few
    rows show feet or they do not agree on a plane. When the feet cover too little of the floor
    to show its tilt (one person standing still, or walking along one line), the camera is taken
    to be level and only its height is measured (``Floor.level``)."""
    rows = foot_rows(rec, image_wh)
    if len(rows) < MIN_ROWS:
        raise ValueError(
            f"cannot find the floor: {len(rows)} rows show a person's feet in the "
            f"picture, {MIN_ROWS} needed (a waist-up view has none); export in "
            f"the camera's frame with --floor camera"
        )
    if len(rows) > MAX_ROWS:  # evenly over the recording: the fit needs no more
        rows = rows[np.linspace(0, len(rows) - 1, MAX_ROWS).astype(np.int64)]
    feet = np.concatenate(
        [_lowest_vertices(v, CAMERA_UP) for v in posed_vertices(body, rec, rows)]
    )
    return fit_floor(feet, seed)


def fit_floor(feet: np.ndarray, seed: int = 0, min_rows: int = MIN_ROWS) -> Floor:
    """The floor under ``feet`` f[n,K,3] m (per row, the vertices lowest along the camera's up:
    ``_lowest_vertices``), from at least ``min_rows`` rows, at least half of them agreeing; see
    :func:`estimate_floor`."""
    feet = np.asarray(feet, np.float64)
    rows = len(feet)
    if rows < min_rows:
        raise ValueError(f"cannot find the floor: {rows} rows with the feet in view, "
                         f"{min_rows} needed")  # fmt: skip
    camera_up = CAMERA_UP
    rng = np.random.default_rng(seed)
    up = camera_up
    for _ in range(4):  # the lowest vertex along the floor's normal, then the floor again
        lowest = feet[np.arange(len(feet)), np.argmin(feet @ up, axis=1)]
        n, d, inl = fit_plane(lowest, up, rng)
        turned = np.degrees(np.arccos(np.clip(n @ up, -1, 1)))
        up = n
        if turned < 0.05:
            break
    if inl.mean() < MIN_INLIER_SHARE:
        raise ValueError(
            f"cannot find the floor: only {int(inl.sum())} of {rows} rows "
            f"with the feet in view agree on a plane (people jumping, sitting or "
            f"on stairs?); export in the camera's frame with --floor camera"
        )
    on = lowest[inl] - lowest[inl].mean(0)
    spread = np.linalg.svd(on - np.outer(on @ n, n), compute_uv=False) / np.sqrt(len(on))
    if spread[1] < MIN_SPREAD_M:
        return _level_floor(feet, camera_up)
    tilt = float(np.degrees(np.arccos(np.clip(n @ camera_up, -1, 1))))
    if tilt > MAX_TILT_DEG:
        raise ValueError(
            f"cannot find the floor: the plane the feet agree on is tilted {tilt:.0f} degrees "
            f"from the camera's up (at most {MAX_TILT_DEG:.0f} expected); export in the "
            f"camera's frame with --floor camera"
        )
    rms = float(np.sqrt(np.mean((lowest[inl] @ n + d) ** 2)))
    if d <= 0:
        raise ValueError(
            "cannot find the floor: the plane the feet agree on is not below the "
            "camera; export in the camera's frame with --floor camera"
        )
    return Floor(up, float(d), rows, int(inl.sum()), rms)


def _lowest_vertices(verts: np.ndarray, up: np.ndarray, k: int = CANDIDATES) -> np.ndarray:
    """f[n,K,3]: the ``k`` vertices of each mesh f[n,V,3] lowest along ``up`` (its feet: the
    lowest along any floor normal near ``up`` is among them)."""
    k = min(k, verts.shape[1])
    idx = np.argpartition(verts @ up, k - 1, axis=1)[:, :k]
    return np.take_along_axis(verts, idx[..., None], axis=1)


def _level_floor(feet: np.ndarray, up: np.ndarray) -> Floor:
    """The floor under a level camera (normal = the camera's up) at the feet's median height."""
    lowest = feet[np.arange(len(feet)), np.argmin(feet @ up, axis=1)]
    heights = -(lowest @ up)  # below the camera: positive
    h = float(np.median(heights))
    inl = np.abs(heights - h) < INLIER_M
    rows = len(feet)
    if inl.mean() < MIN_INLIER_SHARE or h <= 0:
        raise ValueError(
            f"cannot find the floor: the feet of {rows} rows are not at one height below the "
            f"camera; export in the camera's frame with --floor camera"
        )
    rms = float(np.sqrt(np.mean((heights[inl] - h) ** 2)))
    return Floor(up.copy(), h, rows, int(inl.sum()), rms, level=True)


def world_frame(
    rec: dict[str, np.ndarray], body: Any, mode: str | WorldFrame = "auto"
) -> WorldFrame:
    """The exports' frame: ``"camera"`` (the camera's own, Y up) or ``"auto"`` (the floor found
    from the feet; when it cannot be found, the camera's, with a warning saying why); a
    WorldFrame already found is returned as it is (exports of one recording share one fit)."""
    if isinstance(mode, WorldFrame):
        return mode
    if mode not in ("auto", "camera"):
        raise ValueError(f"--floor must be auto or camera, got {mode!r}")
    if mode == "camera":
        return WorldFrame.camera()
    wh = np.asarray(rec.get("image_wh", (0, 0))).reshape(-1)
    if len(wh) < 2 or wh[1] <= 0 or "box_xyxy" not in rec:
        logger.warning(
            "the recording has no image size or boxes, so the floor cannot be "
            "found: written in the camera's frame"
        )
        return WorldFrame.camera()
    try:
        floor = estimate_floor(rec, body, (int(wh[0]), int(wh[1])))
    except ValueError as exc:
        logger.warning("%s; written in the camera's frame", exc)
        return WorldFrame.camera()
    logger.info("floor: %s", floor.describe())
    return floor.world()


class LiveFloor:
    """The floor found while the live loop runs, for the stream (``realtime.stream``):
    ``add(people, image_wh)`` once a frame keeps the feet of the persons whose feet are in view
    (as :func:`foot_rows` picks them); the floor is fitted once ``min_rows`` are in (the first
    frames' few feet can mislead it), again every ``refit_rows`` new rows until ``max_rows``
    are in, then kept. ``world`` is None until the first fit succeeds."""

    def __init__(
        self,
        refit_rows: int = 60,
        max_rows: int = 600,
        candidates: int = 128,
        min_rows: int = MIN_ROWS,
    ) -> None:
        self.refit_rows, self.max_rows, self.candidates = refit_rows, max_rows, candidates
        self.min_rows = int(min_rows)
        self._feet: list[np.ndarray] = []
        self._since_fit = 0
        self.floor: Floor | None = None
        self.world: WorldFrame | None = None

    def add(self, people: list, image_wh: tuple[int, int]) -> None:
        if len(self._feet) >= self.max_rows:
            return
        people = [p for p in people if p.vertices_m is not None]
        boxes = np.array([np.asarray(p.box_xyxy, np.float64).reshape(4) for p in people])
        held = np.array([bool(getattr(p, "held", False)) for p in people])
        for i in np.flatnonzero(feet_in_view(boxes, held, image_wh[1])):
            v = np.asarray(people[i].vertices_m, np.float32)[None]
            self._feet.append(
                _lowest_vertices(v, CAMERA_UP.astype(np.float32), self.candidates)[0]
            )
            self._since_fit += 1
        if len(self._feet) >= self.min_rows and (
            self._since_fit >= self.refit_rows or len(self._feet) >= self.max_rows
        ):
            self._since_fit = 0
            try:
                floor = fit_floor(np.stack(self._feet), min_rows=self.min_rows)
            except ValueError as exc:
                logger.debug("no live floor yet: %s", exc)
                return
            if self.floor is None or len(self._feet) >= self.max_rows:
                logger.info("live floor: %s", floor.describe())
            self.floor, self.world = floor, floor.world()
