"""Live 3D meshes of everyone in front of a camera (or in a video, a folder, the demo clip).

python run_camera.py --source demo --headless --out out/
python run_camera.py --source 0 --checkpoint model.pt --fov 60
"""

from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse the CLI, build the config, run the live loop; returns the exit status."""
    from realtime.config import build_arg_parser, config_from_args

    parser = build_arg_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        cfg = config_from_args(args)
    except ValueError as exc:  # one line, as for every other bad input (no usage block)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    import realtime
    from realtime.sources import SourceError

    try:
        summary = realtime.run(cfg)
    except (SourceError, OSError, ValueError, RuntimeError) as exc:
        # bad input, a missing file or display, a backend this machine lacks, a stage that
        # kept failing: one line (the traceback with --verbose)
        log = logging.getLogger("run_camera")
        log.error("%s", exc)
        log.debug("traceback", exc_info=True)
        return 2
    print(summary.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
