"""The live loop: capture -> detect -> track -> infer -> render, in threads (see pipeline.py).

``realtime.run(PipelineConfig) -> StatsSummary`` builds every stage from the config and runs it;
``run_camera.py`` is the command-line entry point.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["run", "build_pipeline"]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "run"


def build_pipeline(cfg: Any, renderer: Any = None) -> Any:
    """Every stage from a :class:`realtime.config.PipelineConfig`; returns a
    :class:`realtime.pipeline.Pipeline` (its source is open; ``run()`` closes everything).
    ``renderer``: use this one instead of creating one from ``cfg.output``."""
    from realtime.detect import create_detector
    from realtime.infer import build_inference_stage
    from realtime.pipeline import Pipeline
    from realtime.sources import open_source
    from realtime.stats import PipelineStats
    from realtime.track import create_tracker

    if renderer is None and cfg.output.render_mode in ("open3d", "overlay"):
        from realtime.render import require_display

        require_display(cfg.output.render_mode)  # before the model loads, not after
    stats = PipelineStats(log_every_s=cfg.log_every_s)
    source = open_source(cfg.source)
    made: list[Any] = []  # what this function opened, closed again if a later step fails
    try:
        infer = build_inference_stage(cfg, stats.add_time, getattr(source, "camera", None))
        if not source.is_live and not cfg.source.realtime:
            infer.media_fps = source.fps  # smooth over media time, not read time
        detector = create_detector(cfg.detector, getattr(source, "gt_path", None),
                                   infer.box_extent)  # fmt: skip
        tracker = create_tracker(cfg.tracker)
        size = source.size_wh if source.size_wh[0] > 0 else (cfg.source.width, cfg.source.height)
        camera = infer.cameras(size)
        name = _safe_name(getattr(source, "name", "") or "run")
        if renderer is None:  # draws with the inference camera of each frame's size
            from realtime.render.decimate import display_faces

            template = infer.body_model.layer.v_template.cpu().numpy()
            faces = display_faces(template, infer.faces)  # a third of the faces: 3x faster drawing
            renderer = _create_renderer(cfg, camera, faces, name, source.fps, infer.cameras)
            made.append(renderer)
        recorder = _create_recorder(
            cfg,
            camera,
            name,
            infer.cameras,
            getattr(source, "gt_path", None),
            None if source.is_live else source.fps,
        )  # writes at close
        preprocess = None
        if cfg.camera.undistort:
            preprocess = lambda image: _undistort(infer.cameras, image)
        streamer = None
        if getattr(cfg.output, "stream", None):
            from realtime.stream import PoseStreamer

            streamer = PoseStreamer(cfg.output.stream, infer.cameras)
            made.append(streamer)
        pipeline = Pipeline(
            source, detector, tracker, infer, renderer, recorder,
            max_frames=cfg.max_frames, queue_size=cfg.queue_size, preprocess=preprocess,
            on_people=_people_hook(_carry_hook(detector, infer), streamer), stats=stats,
        )  # fmt: skip
        pipeline.streamer = streamer
        return pipeline
    except BaseException:
        for thing in [source, *made]:
            close = getattr(thing, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    logger.debug("closing %r after a failed start", thing, exc_info=True)
        raise


def _undistort(cameras: Any, image: Any) -> Any:
    und = cameras.undistorter((image.shape[1], image.shape[0]))
    return image if und is None else und(image)


def _people_hook(carry: Any, streamer: Any) -> Any:
    """One ``on_people(frame, people)`` hook for the carried boxes and the stream (either may
    be None): called in the inference thread as soon as a frame's persons are placed."""
    if streamer is None:
        return carry

    def hook(frame: Any, people: list) -> None:
        if carry is not None:
            carry(frame, people)
        streamer.send(frame, people)

    return hook


def _carry_hook(detector: Any, infer: Any) -> Any:
    """Hand the last mesh projections to a detector that takes carried boxes: detect-every-N
    (the boxes between detections), the pose detector's track-guided search (where to look)."""
    if not hasattr(detector, "carry"):
        return None
    import numpy as np

    from multiroi.types import Detections
    from realtime.infer import projected_boxes

    def hook(frame: Any, people: list) -> None:
        boxes = projected_boxes(people, infer.cameras(frame.size_wh))
        if infer.box_extent == "visible":  # the boxes the model expects: the visible part
            w, h = frame.size_wh
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        detector.carry(Detections(boxes, np.full(len(boxes), 0.9, np.float32)), frame.index)

    return hook


def _create_renderer(
    cfg: Any, camera: Any, faces: Any, name: str, fps: Any, cameras: Any = None
) -> Any:
    mode = cfg.output.render_mode
    if mode == "none":
        return None
    from realtime.render import create_renderer

    out_dir = cfg.output.out_dir
    return create_renderer(mode, camera, faces, out_dir=out_dir, name=name, fps=fps,
                           max_persons=cfg.tracker.max_persons, cameras=cameras)  # fmt: skip


def _create_recorder(
    cfg: Any,
    camera: Any,
    name: str,
    cameras: Any = None,
    gt_path: Any = None,
    fps: float | None = None,
) -> Any:
    if not (cfg.output.record and cfg.output.out_dir):
        return None
    from realtime.recording import Recorder

    path = Path(cfg.output.out_dir) / f"{name}.npz"
    meta: dict[str, Any] = {"config": cfg.to_dict()}
    if gt_path is not None:  # the demo clip: realtime.score scores the recording against it
        meta["ground_truth"] = str(gt_path)
    if fps:  # a file's frame rate (the media time of its frames, for realtime.bvh)
        meta["fps"] = float(fps)
    rec = Recorder(path, meta=meta, cameras=cameras)
    rec.set_camera(camera.K, camera.image_wh)  # replaced by the first frame's camera
    return rec


def run(cfg: Any, renderer: Any = None) -> Any:
    """Build the pipeline from ``cfg``, run it to the end, close the renderer and write the
    recording; returns the :class:`realtime.stats.StatsSummary`."""
    pipeline = build_pipeline(cfg, renderer)
    written = None
    try:
        return pipeline.run()
    finally:
        reid = getattr(pipeline.tracker, "reid", None)
        if pipeline.recorder is not None and getattr(reid, "aliases", None):
            # tracks shown under their own id before they were recognised: the exports merge them
            pipeline.recorder.meta["reid_aliases"] = {
                str(k): int(v) for k, v in reid.aliases.items()
            }
        streamer = getattr(pipeline, "streamer", None)
        for closable in (pipeline.renderer, pipeline.recorder, streamer):
            if closable is not None:
                path = closable.close()
                if closable is pipeline.recorder:
                    written = path
        infer_backend = getattr(pipeline.infer, "backend", None)
        if infer_backend is not None and hasattr(infer_backend, "close"):
            infer_backend.close()
        gt_path = getattr(pipeline.source, "gt_path", None)
        if written is not None and gt_path is not None:
            _score(Path(written), gt_path, pipeline.infer.body_model)
        if written is not None:
            _export(Path(written), getattr(cfg.output, "export", ()), pipeline.infer.body_model)


def _export(recording: Path, kinds: Any, body: Any) -> None:
    """The ``--export`` files of a recording; a failure is logged, never raised: the recording
    is already safe (``python -m realtime.gltf`` / ``realtime.bvh`` can make them again)."""
    world: Any = "auto"
    if len(kinds) > 1:  # one floor fit for all the files
        from realtime.floor import world_frame
        from realtime.motion import open_recording

        try:
            world = world_frame(open_recording(recording, body=body).rec, body, "auto")
        except Exception:  # noqa: BLE001 - each export below says what is wrong
            world = "auto"
    for kind in kinds:
        try:
            if kind == "glb":
                from realtime.gltf import export_glb

                export_glb(recording, body=body, floor=world)
            else:
                from realtime.bvh import export_recording

                export_recording(recording, body=body, floor=world)
        except Exception as exc:  # noqa: BLE001 - an export is a by-product of the run
            logger.warning("could not export %s as %s: %s (the recording is kept; try "
                           "python -m realtime.%s %s)", recording, kind, exc,
                           "gltf" if kind == "glb" else "bvh", recording)  # fmt: skip


def _score(recording: Path, gt_path: Any, body: Any) -> None:
    """Score a recording of the demo clip against its ground truth (log line and JSON); a
    failure here is logged, never raised: the recording is already safe."""
    from realtime.score import score_files

    try:
        out = recording.with_name(recording.stem + "_score.json")
        score = score_files(recording, gt_path, out, body)
    except Exception as exc:  # noqa: BLE001 - scoring is a report, not part of the run
        logger.warning("could not score %s against the demo clip: %s", recording, exc)
        return
    logger.info("%s", score.describe())
