"""Stream each frame's persons live as JSON over UDP, to drive avatars in Blender, Unity & co.

    python run_camera.py --stream udp://127.0.0.1:9000        # the live loop sends
    python -m realtime.stream 9000                            # prints what arrives

One datagram per frame, sent as soon as the frame's persons are placed (before the drawing),
UTF-8 JSON (``FORMAT`` version 1)::

    {"format": "multiroi.persons", "version": 1, "frame": 12, "t_capture_s": 3.25,
     "image_wh": [640, 480], "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],
     "persons": [{"id": 3, "box_xyxy": [x0, y0, x1, y1],
                  "transl_m": [x, y, z], "pose_axis_angle": [72 numbers], "betas": [10],
                  "joints_m": [72 numbers], "held": false}]}

Axes and units are the camera frame's (OpenCV: x right, y down, z forward; metres, radians):
``pose_axis_angle`` is SMPL's 24 joint rotations (joint 0, the root, in the camera frame; the
others relative to their parent), ``transl_m`` the body model's translation, ``joints_m`` the
24 posed joints in the camera frame; ``held`` true when pose, shape and depth are an earlier
frame's, kept while a nearer person covers or hides this one (``realtime.occlusion``). A frame
with nobody is sent too (``"persons": []``). Sending never stops the loop: an unreachable
receiver is warned about once; a frame too large for one datagram (over ``MAX_DATAGRAM`` bytes:
about 60 persons, 1 kB each) is sent without ``joints_m``.

Once the floor under the people's feet is found (``realtime.floor.LiveFloor``: from the first
rows with the feet in view, refitted until 600 rows are in, then kept), every datagram also
carries ``"world": {"rotation": [[3x3]], "offset_m": [3], "camera_height_m": h, "pitch_deg":
p, "roll_deg": r, "level": false}``: p_world = rotation @ p_camera + offset is a Y-up frame
(x right, y up, z towards the camera) on the floor (y = 0), the camera at (0, h, 0); receivers
that stand avatars on the floor apply it (``realtime/blender_live.py`` does).
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

FORMAT = {"format": "multiroi.persons", "version": 1}
MAX_DATAGRAM = 65000  # bytes: UDP's limit is 65,507


def parse_target(target: str) -> tuple[str, int]:
    """``udp://HOST:PORT`` (or ``HOST:PORT``) -> (host, port); ValueError says what is wanted."""
    rest = target[len("udp://"):] if target.startswith("udp://") else target
    host, sep, port = rest.rpartition(":")
    if "://" in rest or not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--stream wants udp://HOST:PORT (e.g. udp://127.0.0.1:9000), "
                         f"got {target!r}")  # fmt: skip
    return host.strip("[]"), int(port)


def _round(a: Any, digits: int = 5) -> list:
    return np.round(np.asarray(a, np.float64), digits).tolist()


def message(frame_index: int, t_capture_s: float, image_wh: tuple[int, int], K: Any,
            people: list, joints: bool = True, floor: Any = None) -> bytes:  # fmt: skip
    """The datagram of one frame (see module doc); floor: a ``realtime.floor.Floor`` or None."""
    from realtime.recording import rotmat_to_axis_angle_np

    persons = []
    for p in people:
        d = {"id": int(p.track_id), "box_xyxy": _round(p.box_xyxy, 1),
             "transl_m": _round(np.asarray(p.transl_m).reshape(3)),
             "pose_axis_angle": _round(rotmat_to_axis_angle_np(p.rotmat).reshape(-1)),
             "betas": _round(np.asarray(p.betas).reshape(-1)),
             "held": bool(getattr(p, "held", False))}  # fmt: skip
        if joints and p.joints_m is not None:
            d["joints_m"] = _round(np.asarray(p.joints_m).reshape(-1))
        persons.append(d)
    body = {**FORMAT, "frame": int(frame_index), "t_capture_s": round(float(t_capture_s), 6),
            "image_wh": [int(image_wh[0]), int(image_wh[1])],
            "K": None if K is None else _round(K, 3), "persons": persons}  # fmt: skip
    if floor is not None:
        world = floor.world()
        body["world"] = {
            "rotation": _round(world.rotation, 6),
            "offset_m": _round(world.offset_m),
            "camera_height_m": round(floor.height_m, 4),
            "pitch_deg": round(floor.pitch_deg, 2),
            "roll_deg": round(floor.roll_deg, 2),
            "level": bool(floor.level),
        }
    return json.dumps(body, separators=(",", ":")).encode()


class PoseStreamer:
    """``PoseStreamer("udp://HOST:PORT", cameras)``; ``send(frame, people)`` once a frame (the
    live loop's ``on_people`` hook), ``close()`` at the end. cameras: ``size_wh -> Camera``
    (``realtime.cameras.CameraProvider``) for the K of each frame, or None."""

    def __init__(self, target: str, cameras: Any = None, floor: bool = True) -> None:
        from realtime.floor import LiveFloor

        self.host, self.port = parse_target(target)
        self.cameras = cameras
        self.floor = LiveFloor() if floor else None
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sent = 0
        self.failed = 0
        self._warned = False
        logger.info("streaming persons as JSON over UDP to %s:%d (realtime.stream)",
                    self.host, self.port)  # fmt: skip

    def send(self, frame: Any, people: list) -> None:
        K = self.cameras(frame.size_wh).K if self.cameras is not None else None
        floor = None
        if self.floor is not None:
            self.floor.add(people, frame.size_wh)
            floor = self.floor.floor
        data = message(frame.index, frame.t_capture_s, frame.size_wh, K, people, floor=floor)
        if len(data) > MAX_DATAGRAM:
            data = message(frame.index, frame.t_capture_s, frame.size_wh, K, people, joints=False,
                           floor=floor)  # fmt: skip
        try:
            self._sock.sendto(data, (self.host, self.port))
            self.sent += 1
        except OSError as exc:  # no route, refused, too large: the loop goes on
            self.failed += 1
            if not self._warned:
                self._warned = True
                logger.warning("could not stream frame %d to %s:%d (%s); going on, without "
                               "saying it again", frame.index, self.host, self.port,
                               exc)  # fmt: skip

    def close(self) -> None:
        self._sock.close()
        if self.sent or self.failed:
            logger.info("streamed %d frames to %s:%d%s", self.sent, self.host, self.port,
                        f", {self.failed} failed" if self.failed else "")  # fmt: skip


def listen(port: int, host: str = "0.0.0.0", count: int | None = None,
           timeout_s: float | None = None) -> list[dict]:  # fmt: skip
    """Receive datagrams on ``port`` and log one line each; returns the messages (after
    ``count`` of them, or when none came for ``timeout_s``)."""
    got: list[dict] = []
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, port))
        sock.settimeout(timeout_s)
        while count is None or len(got) < count:
            try:
                data, _ = sock.recvfrom(65536)
            except TimeoutError:
                break
            msg = json.loads(data)
            got.append(msg)
            people = ", ".join(f"{p['id']} at {p['transl_m'][2]:.2f} m"
                               for p in msg.get("persons", []))  # fmt: skip
            world = msg.get("world")
            floor = ""
            if isinstance(world, dict) and "camera_height_m" in world:
                floor = f"; floor {world['camera_height_m']:.2f} m below the camera"
            n = len(msg.get("persons", []))
            logger.info("frame %s: %d person(s)%s%s", msg.get("frame"), n,
                        f" ({people})" if people else "", floor)  # fmt: skip
    return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m realtime.stream",
                                 description="Print what run_camera.py --stream sends.")
    ap.add_argument("port", type=int, help="UDP port to listen on")
    ap.add_argument("--host", default="0.0.0.0", help="address to listen on (:: for IPv6)")
    ap.add_argument("--count", type=int, default=None, help="stop after N frames")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    if not 0 < args.port < 65536:
        logger.error("the port must be 1-65535 (the PORT of run_camera.py --stream "
                     "udp://HOST:PORT), got %d", args.port)  # fmt: skip
        return 2
    try:
        listen(args.port, args.host.strip("[]"), args.count)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
