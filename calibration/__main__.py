"""``python -m calibration`` / ``multiroi-calibrate``: camera intrinsics from a board.

Examples::

    python -m calibration --images shots/ --board 9x6 --square 0.025 --out camera.yaml
    python -m calibration --video board.mp4 --board 9x6 --square 0.025 --out camera.yaml
    python -m calibration --camera 0 --board charuco:5x7 --square 0.04 --marker 0.03 \\
        --dict DICT_5X5_100 --out camera.yaml
"""

from __future__ import annotations

import argparse
import logging
import sys

from calibration.boards import make_detector, parse_board
from calibration.solver import CalibrationResult, SolverSettings, calibrate_views
from multiroi.geometry.calibration_file import write_calibration

logger = logging.getLogger("calibration")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m calibration",
        description="Calibrate a camera (K, distortion) from chessboard or ChArUco views.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR", help="folder of board images (one resolution)")
    src.add_argument("--video", metavar="FILE", help="video of the board moving around")
    src.add_argument("--camera", metavar="INDEX", type=int, help="live camera (needs a display)")
    src.add_argument("--make-board", metavar="PNG", help="write a printable board image and exit")
    p.add_argument("--dpi", type=int, default=300, help="--make-board: printer resolution")
    p.add_argument(
        "--board",
        required=True,
        help="COLSxROWS inner corners (chessboard, e.g. 9x6) or charuco:COLSxROWS "
        "squares (e.g. charuco:5x7)",
    )
    p.add_argument("--square", type=float, required=True, help="square edge in metres")
    p.add_argument("--marker", type=float, help="ChArUco marker edge in metres")
    p.add_argument("--dict", default="DICT_5X5_100", help="ChArUco ArUco dictionary")
    p.add_argument(
        "--legacy-charuco",
        action="store_true",
        help="board printed by OpenCV < 4.6 (even row count)",
    )
    p.add_argument("--out", default="camera.yaml", help="output YAML (default camera.yaml)")
    p.add_argument("--min-views", type=int, default=5, help="fewest usable views (default 5)")
    p.add_argument(
        "--min-coverage",
        type=float,
        default=0.5,
        help="warn when views cover less of the image (0-1, default 0.5)",
    )
    p.add_argument(
        "--dist-coeffs",
        type=int,
        default=5,
        choices=(0, 4, 5, 8),
        help="distortion model: 0 none, 4 (k1 k2 p1 p2), 5 (+k3, default), 8 rational",
    )
    p.add_argument("--stride", type=int, default=0, help="video: examine every Nth frame")
    p.add_argument("--max-views", type=int, default=40, help="video: most views kept")
    p.add_argument("--target-views", type=int, default=20, help="live: stop at this many views")
    p.add_argument("--target-coverage", type=float, default=0.7, help="live: coverage to reach")
    p.add_argument("--target-rms", type=float, default=0.5, help="live: RMS (px) to reach")
    p.add_argument("--resolution", metavar="WxH", help="live: requested capture size")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _parse_wh(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--resolution must look like 1280x720, got '{text}'") from None
    return w, h


def make_board(args: argparse.Namespace) -> str:
    """Write the board of ``args`` as a PNG to print at 100% scale; returns a message."""
    import cv2

    from calibration.synthetic import charuco_texture, chessboard_texture

    spec = parse_board(args.board, args.square, args.marker, args.dict, args.legacy_charuco)
    pps = int(round(spec.square_m / 0.0254 * args.dpi))
    if pps < 20:
        raise ValueError(
            f"{spec.square_m} m squares at {args.dpi} dpi are only {pps} px: raise --dpi"
        )
    maker = chessboard_texture if spec.kind == "chessboard" else charuco_texture
    image = maker(spec, px_per_square=pps, margin_squares=0.5).texture
    if not cv2.imwrite(args.make_board, image):
        raise ValueError(f"--make-board: cannot write {args.make_board} (use a .png name)")
    h, w = image.shape
    return (
        f"wrote {args.make_board}: {w}x{h} px = {w / args.dpi * 25.4:.0f} x "
        f"{h / args.dpi * 25.4:.0f} mm at {args.dpi} dpi; print at 100% scale (no 'fit to page') "
        f"and measure a square: pass the measured size as --square"
    )


def collect_and_calibrate(args: argparse.Namespace) -> CalibrationResult:
    """Run the source chosen by ``args`` and calibrate."""
    spec = parse_board(args.board, args.square, args.marker, args.dict, args.legacy_charuco)
    detector = make_detector(spec)
    solver = SolverSettings(
        min_views=args.min_views, min_coverage=args.min_coverage, dist_coeffs=args.dist_coeffs
    )
    progress = not args.no_progress
    if args.camera is not None:
        from calibration.live import LiveSettings, run_live

        if spec.kind == "chessboard":
            detector.exhaustive = False  # keep the live loop responsive
        live = LiveSettings(
            target_views=args.target_views,
            target_coverage=args.target_coverage,
            target_rms_px=args.target_rms,
            resolution_wh=_parse_wh(args.resolution),
        )
        return run_live(args.camera, detector, live, solver, board=spec.describe())
    from calibration.collect import list_images, views_from_images, views_from_video

    if args.images:
        views, wh = views_from_images(list_images(args.images), detector, progress)
    else:
        views, wh = views_from_video(
            args.video, detector, args.stride, max_views=args.max_views, progress=progress
        )
    logger.info("%d board views at %dx%d; calibrating", len(views), wh[0], wh[1])
    return calibrate_views(views, wh, solver, board=spec.describe())


def summary(result: CalibrationResult) -> str:
    """Human-readable lines about a calibration result."""
    d = result.data
    fovx, fovy = d.fov_deg()
    lines = [
        f"image {d.image_wh[0]}x{d.image_wh[1]}, {d.num_views} views, "
        f"coverage {result.coverage.fraction:.0%}",
        f"fx={d.K[0, 0]:.2f} fy={d.K[1, 1]:.2f} cx={d.K[0, 2]:.2f} cy={d.K[1, 2]:.2f} px "
        f"(fov {fovx:.1f} x {fovy:.1f} deg)",
        "dist=" + " ".join(f"{v:+.5f}" for v in d.dist),
        f"rms={d.rms_px:.3f} px (worst view {result.per_view_rms_px.max():.3f} px)",
    ]
    if result.rejected:
        lines.append("dropped outlier views: " + ", ".join(result.rejected))
    lines += [f"warning: {w}" for w in result.warnings]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.make_board:
            print(make_board(args))
            return 0
        result = collect_and_calibrate(args)
        path = write_calibration(args.out, result.data)
    except ValueError as e:  # CalibrationError, CalibrationFileError and bad input
        logger.error("%s", e)
        return 2
    except KeyboardInterrupt:
        logger.error("interrupted; nothing written")
        return 130
    print(summary(result))
    print(f"wrote {path}  (use it with: python run_camera.py --calib {path})")
    if result.data.rms_px > 1.0:
        logger.warning(
            "RMS %.2f px is high: check the square size, blur and board flatness",
            result.data.rms_px,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
