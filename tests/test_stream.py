"""realtime.stream: each frame's persons as one JSON datagram over UDP."""

from __future__ import annotations

import json
import logging
import socket
import threading

import numpy as np
import pytest

from multiroi.types import Frame, PersonState
from realtime.stream import MAX_DATAGRAM, PoseStreamer, listen, message, parse_target


def _person(tid: int, angle: float = 0.4) -> PersonState:
    import cv2

    rot = np.tile(np.eye(3, dtype=np.float32), (24, 1, 1))
    rot[5] = cv2.Rodrigues(np.float64([0, angle, 0]))[0]
    joints = np.random.default_rng(tid).normal(0, 1, (24, 3)).astype(np.float32)
    return PersonState(tid, np.float32([10, 20, 110, 300]), rot, np.full(10, 0.1, np.float32),
                       np.float32([0.5, 0.1, 4.0]), None, joints)


class _Camera:
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])


def test_targets_are_checked_in_one_line():
    assert parse_target("udp://127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_target("localhost:7") == ("localhost", 7)
    assert parse_target("udp://[::1]:9000") == ("::1", 9000)
    for bad in ("nowhere", "udp://host", "tcp://host:9000", "host:0", "host:70000", ":9000"):
        with pytest.raises(ValueError, match=r"--stream wants udp://HOST:PORT"):
            parse_target(bad)


def test_a_message_holds_each_persons_pose_in_the_camera_frame():
    msg = json.loads(message(7, 1.25, (640, 480), _Camera.K, [_person(3), _person(4, -0.2)]))
    assert msg["format"] == "multiroi.persons" and msg["version"] == 1
    assert (msg["frame"], msg["t_capture_s"], msg["image_wh"]) == (7, 1.25, [640, 480])
    assert msg["K"][0] == [500.0, 0.0, 320.0]
    assert [p["id"] for p in msg["persons"]] == [3, 4]
    aa = np.array(msg["persons"][0]["pose_axis_angle"]).reshape(24, 3)
    np.testing.assert_allclose(aa[5], [0, 0.4, 0], atol=1e-5)
    assert np.abs(np.delete(aa, 5, 0)).max() < 1e-6
    assert msg["persons"][1]["pose_axis_angle"][16] == pytest.approx(-0.2, abs=1e-5)
    assert msg["persons"][0]["transl_m"] == [0.5, 0.1, 4.0]
    assert len(msg["persons"][0]["joints_m"]) == 72 and msg["persons"][0]["held"] is False
    held = _person(5)
    held.held = True
    assert json.loads(message(7, 0.0, (640, 480), None, [held]))["persons"][0]["held"] is True
    assert json.loads(message(8, 0.0, (640, 480), None, []))["persons"] == []


def test_the_streamer_sends_one_datagram_a_frame_and_never_raises(caplog):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    tx = PoseStreamer(f"udp://127.0.0.1:{rx.getsockname()[1]}", lambda wh: _Camera())
    image = np.zeros((480, 640, 3), np.uint8)
    tx.send(Frame(0, 0.0, image), [_person(1)])
    tx.send(Frame(1, 0.04, image), [])
    got = [json.loads(rx.recvfrom(65536)[0]) for _ in range(2)]
    assert [m["frame"] for m in got] == [0, 1] and len(got[0]["persons"]) == 1
    assert got[0]["K"][1] == [0.0, 500.0, 240.0] and tx.sent == 2
    # many persons: too large for a datagram with the joints, sent without them
    crowd = [_person(i) for i in range(80)]
    assert len(message(2, 0.0, (640, 480), None, crowd)) > MAX_DATAGRAM
    tx.send(Frame(2, 0.08, image), crowd)
    big = json.loads(rx.recvfrom(65536)[0])
    assert len(big["persons"]) == 80 and "joints_m" not in big["persons"][0]
    rx.close()

    class Broken:
        def sendto(self, *a):
            raise OSError("network is unreachable")

        def close(self):
            pass

    tx._sock = Broken()
    with caplog.at_level(logging.WARNING):
        for k in range(3):
            tx.send(Frame(3 + k, 0.0, image), [_person(1)])
    assert tx.failed == 3 and caplog.text.count("could not stream") == 1
    tx.close()


def _free_port(family: int, host: str) -> int:
    probe = socket.socket(family, socket.SOCK_DGRAM)
    probe.bind((host, 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def _listen_while_sending(host: str, port: int, target: str, people: list) -> list:
    """``listen`` on (host, port) in a thread for one message; send frame 9 to ``target``
    until the listener has it (it may bind after the first sends)."""
    result: list = []
    t = threading.Thread(target=lambda: result.extend(listen(port, host, count=1,
                                                             timeout_s=5)))  # fmt: skip
    t.start()
    tx = PoseStreamer(target)
    for _ in range(50):
        tx.send(Frame(9, 0.0, np.zeros((4, 4, 3), np.uint8)), people)
        t.join(0.05)
        if not t.is_alive():
            break
    tx.close()
    t.join(5)
    return result


def test_the_listener_prints_what_arrives(caplog):
    port = _free_port(socket.AF_INET, "127.0.0.1")
    result = _listen_while_sending("127.0.0.1", port, f"127.0.0.1:{port}", [_person(2)])
    assert result and result[0]["frame"] == 9
    assert "frame 9: 1 person(s) (2 at 4.00 m)" in caplog.text
    assert "floor" not in caplog.text  # no floor found from one frame


def test_once_the_floor_is_found_every_datagram_carries_it(monkeypatch, caplog):
    """The streamer's live floor, once found, goes into each datagram as "world"; the listener
    says so."""
    from realtime.floor import Floor

    found = Floor(np.array([0.0, -1.0, 0.0]), 1.25, 200, 190, 0.01)
    monkeypatch.setattr("realtime.floor.LiveFloor.add",
                        lambda self, people, wh: setattr(self, "floor", found))  # fmt: skip
    port = _free_port(socket.AF_INET, "127.0.0.1")
    result = _listen_while_sending("127.0.0.1", port, f"127.0.0.1:{port}", [_person(2)])
    world = result[0]["world"]
    assert world["camera_height_m"] == 1.25 and world["offset_m"] == [0.0, 1.25, 0.0]
    assert world["level"] is False and np.allclose(world["rotation"], np.diag([1, -1, -1]))
    assert "floor 1.25 m below the camera" in caplog.text


def test_the_cli_option_and_the_config():
    from realtime.config import OutputConfig, build_arg_parser, config_from_args

    cfg = config_from_args(build_arg_parser().parse_args(["--stream", "udp://127.0.0.1:9000"]))
    assert cfg.output.stream == "udp://127.0.0.1:9000"
    assert config_from_args(build_arg_parser().parse_args([])).output.stream is None
    with pytest.raises(ValueError, match="--stream wants"):
        OutputConfig(stream="9000")


def test_the_listener_refuses_a_bad_port_in_one_line_and_listens_on_ipv6(caplog):
    from realtime.stream import main

    assert main(["99999"]) == 2 and "the port must be 1-65535" in caplog.text
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        port = _free_port(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    result = _listen_while_sending("::1", port, f"udp://[::1]:{port}", [])
    assert result and result[0]["frame"] == 9
