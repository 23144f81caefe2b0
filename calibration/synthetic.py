"""Board images rendered through a known camera (K and lens distortion), for tests and self-checks.

Rendering is exact inverse mapping: every supersample of the distorted image is undistorted
(cv2.undistortPoints, iterated to 1e-12), its ray is intersected with the board plane, and the
board texture is sampled there; supersamples are averaged (antialiasing). Pixel convention:
integer image coordinates are pixel centres (OpenCV).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration.boards import BoardSpec


@dataclass
class BoardTexture:
    """texture: uint8[h,w] gray image of the printed board; tex_from_board: f64[3,3] maps board
    metres (x, y, 1) to texture pixel coordinates (pixel centres at integers);
    extent_m: f64[4,2] board-frame corners of the printed sheet (for visibility checks)."""

    texture: np.ndarray
    tex_from_board: np.ndarray
    extent_m: np.ndarray


def chessboard_texture(spec: BoardSpec, px_per_square: int = 48, margin_squares: float = 1.0):
    """The printed chessboard: (cols+1) x (rows+1) squares plus a white margin."""
    s, pps = spec.square_m, px_per_square
    nx, ny = spec.cols + 1 + 2 * margin_squares, spec.rows + 1 + 2 * margin_squares
    w, h = int(round(nx * pps)), int(round(ny * pps))
    off = 1.0 + margin_squares  # squares between the sheet edge and the first inner corner
    qx = np.floor((np.arange(w) + 0.5) / pps - off).astype(int)
    qy = np.floor((np.arange(h) + 0.5) / pps - off).astype(int)
    inside_x = (qx >= -1) & (qx < spec.cols)
    inside_y = (qy >= -1) & (qy < spec.rows)
    black = ((qx[None, :] + qy[:, None]) % 2 == 0) & inside_x[None, :] & inside_y[:, None]
    tex = np.where(black, 0, 255).astype(np.uint8)
    a = pps / s
    tex_from_board = np.array([[a, 0, off * pps - 0.5], [0, a, off * pps - 0.5], [0, 0, 1]])
    ext = np.array([[-off, -off], [nx - off, -off], [nx - off, ny - off], [-off, ny - off]]) * s
    return BoardTexture(tex, tex_from_board, ext)


def charuco_texture(spec: BoardSpec, px_per_square: int = 60, margin_squares: float = 0.5):
    """The printed ChArUco board (cv2.aruco generateImage) with a white margin."""

    from calibration.boards import CharucoBoardDetector

    board = CharucoBoardDetector(spec).board
    pps, s = px_per_square, spec.square_m
    m = int(round(margin_squares * pps))
    tex = board.generateImage((spec.cols * pps + 2 * m, spec.rows * pps + 2 * m), None, m, 1)
    a = pps / s
    tex_from_board = np.array([[a, 0, m - 0.5], [0, a, m - 0.5], [0, 0, 1]])
    ms = margin_squares
    ext = (
        np.array(
            [
                [-ms, -ms],
                [spec.cols + ms, -ms],
                [spec.cols + ms, spec.rows + ms],
                [-ms, spec.rows + ms],
            ]
        )
        * s
    )
    return BoardTexture(tex.astype(np.uint8), tex_from_board, ext)


class SyntheticCamera:
    """A camera with known K f64[3,3] px, dist (OpenCV order) and image_wh (W, H) that renders
    planar boards; ``supersample`` samples per pixel edge (antialiasing)."""

    def __init__(self, K, dist, image_wh: tuple[int, int], supersample: int = 3) -> None:
        import cv2

        self.K = np.asarray(K, np.float64)
        self.dist = np.asarray(dist, np.float64).reshape(-1)
        self.image_wh = (int(image_wh[0]), int(image_wh[1]))
        self.ss = int(supersample)
        w, h = self.image_wh
        u = (np.arange(w * self.ss) + 0.5) / self.ss - 0.5
        v = (np.arange(h * self.ss) + 0.5) / self.ss - 0.5
        uu, vv = np.meshgrid(u, v)
        pts = np.stack([uu.ravel(), vv.ravel()], axis=1).reshape(-1, 1, 2)
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 1e-12)
        if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4: the iterative variant takes criteria
            xy = cv2.undistortPointsIter(pts, self.K, self.dist, None, None, crit)
        else:
            xy = cv2.undistortPoints(pts, self.K, self.dist, criteria=crit)
        xy = xy.reshape(-1, 2)
        self._xy_norm = xy.astype(np.float64)  # f64[H*ss*W*ss, 2] normalised, undistorted

    def project(self, points_m: np.ndarray, rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
        """f[N,3] board-frame metres -> f64[N,2] distorted pixel positions."""
        import cv2

        pts = np.asarray(points_m, np.float64).reshape(-1, 1, 3)
        out, _ = cv2.projectPoints(pts, rvec, tvec, self.K, self.dist)
        return out.reshape(-1, 2)

    def render(
        self,
        board: BoardTexture,
        rvec: np.ndarray,
        tvec: np.ndarray,
        background: int = 110,
        noise_sigma: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """uint8[H,W] gray image of ``board`` at pose (rvec, tvec) (board frame -> camera)."""
        import cv2

        R, _ = cv2.Rodrigues(np.asarray(rvec, np.float64))
        H_norm_from_board = np.column_stack([R[:, 0], R[:, 1], np.asarray(tvec, float).ravel()])
        M = board.tex_from_board @ np.linalg.inv(H_norm_from_board)
        xy = self._xy_norm
        den = M[2, 0] * xy[:, 0] + M[2, 1] * xy[:, 1] + M[2, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            mx = (M[0, 0] * xy[:, 0] + M[0, 1] * xy[:, 1] + M[0, 2]) / den
            my = (M[1, 0] * xy[:, 0] + M[1, 1] * xy[:, 1] + M[1, 2]) / den
        behind = ~(den > 0)  # den = 1 / depth along the ray (the texture map is affine)
        mx[behind | ~np.isfinite(mx)] = -10.0
        my[behind | ~np.isfinite(my)] = -10.0
        w, h = self.image_wh
        shape = (h * self.ss, w * self.ss)
        big = cv2.remap(
            board.texture,
            mx.reshape(shape).astype(np.float32),
            my.reshape(shape).astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=int(background),
        )
        img = big.reshape(h, self.ss, w, self.ss).astype(np.float32).mean(axis=(1, 3))
        if noise_sigma > 0:
            rng = rng or np.random.default_rng(0)
            img = img + rng.normal(0.0, noise_sigma, img.shape)
        return np.clip(np.round(img), 0, 255).astype(np.uint8)


def random_poses(
    cam: SyntheticCamera,
    board: BoardTexture,
    center_m: np.ndarray,
    n: int,
    rng: np.random.Generator,
    region_xyxy: tuple[float, float, float, float] | None = None,
    width_frac: tuple[float, float] = (0.35, 0.6),
    max_tilt_deg: float = 40.0,
    margin_px: float = 4.0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` board poses (rvec, tvec) whose whole printed sheet is visible in the image.

    Centres cycle over a 3x3 grid of ``region_xyxy`` (fractions of W, H; whole image by default)
    with jitter; apparent sheet width is ``width_frac`` of the image width; tilt up to
    ``max_tilt_deg`` about x and y, in-plane roll up to 25 degrees.
    """
    import cv2

    w, h = cam.image_wh
    x0, y0, x1, y1 = region_xyxy or (0.0, 0.0, 1.0, 1.0)
    sheet_w = float(np.ptp(board.extent_m[:, 0]))
    ext3 = np.column_stack([board.extent_m, np.zeros(4)])
    tt = np.linspace(0.0, 1.0, 12, endpoint=False)[:, None]
    border3 = np.concatenate([ext3[k] + tt * (ext3[(k + 1) % 4] - ext3[k]) for k in range(4)])
    fx = cam.K[0, 0]
    poses: list[tuple[np.ndarray, np.ndarray]] = []
    for i in range(n):
        cell = i % 9
        for _ in range(500):
            fu = x0 + (x1 - x0) * np.clip((cell % 3 + 0.5 + rng.uniform(-0.4, 0.4)) / 3, 0, 1)
            fv = y0 + (y1 - y0) * np.clip((cell // 3 + 0.5 + rng.uniform(-0.4, 0.4)) / 3, 0, 1)
            z = fx * sheet_w / (rng.uniform(*width_frac) * w)
            ang = np.radians(
                [
                    rng.uniform(-1, 1) * max_tilt_deg,
                    rng.uniform(-1, 1) * max_tilt_deg,
                    rng.uniform(-25, 25),
                ]
            )
            R = _euler_xyz(ang)
            ray = np.linalg.solve(cam.K, [fu * w, fv * h, 1.0])
            t = z * ray - R @ np.asarray(center_m, float)
            rvec, _ = cv2.Rodrigues(R)
            corners_cam = ext3 @ R.T + t
            if np.any(corners_cam[:, 2] <= 0.05):
                continue
            px = cam.project(border3, rvec, t)  # sheet edges bend under distortion: sample them
            if np.all(
                (px[:, 0] > margin_px)
                & (px[:, 0] < w - 1 - margin_px)
                & (px[:, 1] > margin_px)
                & (px[:, 1] < h - 1 - margin_px)
            ):
                poses.append((rvec.reshape(3), t.reshape(3)))
                break
        else:
            raise RuntimeError("could not place the board in the image; widen region/width_frac")
    return poses


def _euler_xyz(ang: np.ndarray) -> np.ndarray:
    ax, ay, az = ang
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz
