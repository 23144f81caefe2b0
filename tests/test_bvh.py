"""realtime.bvh: a recording's tracks as BVH files whose forward kinematics give back the body
model's joints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from realtime.bvh import export_recording, main


def _rotations(n: int, seed: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    aa = rng.normal(0, 0.5, (n, 24, 3))
    aa[:, 0] = [np.pi, 0.2, 0.1]  # upright in the camera frame, turned a little
    return np.stack([[cv2.Rodrigues(v)[0] for v in p] for p in aa]).astype(np.float32)


def _recording(path, toy_body_model, fps=25.0):
    """Track 4 in frames 0, 1 and 3 (lost in frame 2), track 6 in frames 1-3."""
    frames = np.array([0, 1, 1, 2, 3, 3])
    tracks = np.array([4, 4, 6, 6, 4, 6])
    n = len(frames)
    betas = np.where(tracks[:, None] == 4, 0.8, -0.5).astype(np.float32) * np.ones((n, 10))
    transl = np.float32([[0.3, 0.2, 4.0], [0.35, 0.2, 4.1], [-1, 0, 6], [-1, 0, 6.1],
                         [0.4, 0.2, 4.2], [-1, 0, 6.2]])  # fmt: skip
    rec = {"frame_index": frames, "track_id": tracks, "rotmat": _rotations(n, 0),
           "betas": betas.astype(np.float32), "transl_m": transl,
           "frames_index": np.arange(4), "frames_t_capture_s": np.arange(4) * 0.1,
           "meta_json": np.asarray(json.dumps({"config": {}, "fps": fps}))}  # fmt: skip
    np.savez(path, **rec)
    return rec


def _parse(text: str):
    """(names, parents, offsets [J,3], end sites, frame time, motion [F, channels])."""
    tokens = text.split()
    names, parents, offsets, stack = [], [], [], []
    i = tokens.index("HIERARCHY") + 1
    while tokens[i] != "MOTION":
        t = tokens[i]
        if t in ("ROOT", "JOINT"):
            names.append(tokens[i + 1])
            parents.append(stack[-1] if stack else -1)
            i += 2
        elif t == "End":
            i += 2  # "End Site"
            assert tokens[i] == "{" and tokens[i + 1] == "OFFSET"
            i += 6  # { OFFSET x y z }
            assert tokens[i - 1] == "}"
        elif t == "{":
            stack.append(len(names) - 1)
            i += 1
        elif t == "}":
            stack.pop()
            i += 1
        elif t == "OFFSET":
            offsets.append([float(x) for x in tokens[i + 1 : i + 4]])
            i += 4
        elif t == "CHANNELS":
            i += 2 + int(tokens[i + 1])
        else:
            raise AssertionError(f"unexpected token {t!r}")
    n_frames = int(tokens[i + 2])
    frame_time = float(tokens[i + 5])
    values = np.array(tokens[i + 6 :], np.float64).reshape(n_frames, -1)
    return names, parents, np.array(offsets), frame_time, values


def _fk(parents, offsets, values):
    """Joint positions [F,J,3] of the parsed BVH: R = Rz Rx Ry per joint, degrees."""
    from scipy.spatial.transform import Rotation

    out = np.zeros((len(values), len(parents), 3))
    for f, row in enumerate(values):
        rot = Rotation.from_euler("ZXY", row[3:].reshape(-1, 3), degrees=True).as_matrix()
        world = [None] * len(parents)
        for j, p in enumerate(parents):
            if p < 0:
                world[j], out[f, j] = rot[j], row[:3]
            else:
                world[j] = world[p] @ rot[j]
                out[f, j] = out[f, p] + world[p] @ offsets[j]
    return out


def test_forward_kinematics_of_the_file_gives_the_body_models_joints(tmp_path, toy_body_model):
    rec = _recording(tmp_path / "run.npz", toy_body_model)
    paths = export_recording(tmp_path / "run.npz", tmp_path / "bvh", body=toy_body_model)
    assert [p.name for p in paths] == ["run_track4.bvh", "run_track6.bvh"]
    assert not list((tmp_path / "bvh").glob("*.partial"))
    names, parents, offsets, frame_time, values = _parse(paths[0].read_text())
    from multiroi.body.files import SMPL_JOINT_NAMES, SMPL_PARENTS

    order = [SMPL_JOINT_NAMES.index(n) for n in names]  # the file's joints, depth first
    assert sorted(order) == list(range(24))
    assert [order[p] if p >= 0 else -1 for p in parents] == [SMPL_PARENTS[j] for j in order]
    assert frame_time == pytest.approx(1 / 25) and len(values) == 4  # frames 0-3
    got = _fk(parents, offsets, values)
    rows = np.flatnonzero(rec["track_id"] == 4)  # frames 0, 1, 3
    with torch.no_grad():
        want = toy_body_model.joints(torch.from_numpy(rec["rotmat"][rows]),
                                     torch.from_numpy(rec["betas"][rows]),
                                     torch.from_numpy(rec["transl_m"][rows])).numpy()  # fmt: skip
    want = want * [1, -1, -1]  # camera frame -> Y-up, z towards the camera
    np.testing.assert_allclose(got[[0, 1, 3]][:, np.argsort(order)], want, atol=1e-4)
    # lost in frame 2: halfway between frames 1 and 3, rotations by slerp
    from scipy.spatial.transform import Rotation, Slerp

    np.testing.assert_allclose(values[2, :3], (values[1, :3] + values[3, :3]) / 2, atol=1e-5)
    rots = [Rotation.from_euler("ZXY", values[f, 3:].reshape(-1, 3), degrees=True)
            for f in (1, 2, 3)]  # fmt: skip
    for j in range(24):
        pair = Rotation.from_quat(np.stack([rots[0][j].as_quat(), rots[2][j].as_quat()]))
        half = Slerp([0.0, 1.0], pair)(0.5)
        assert (half.inv() * rots[1][j]).magnitude() < 1e-4, j
    assert (got[:, :, 1].max(1) > got[:, :, 1].min(1) + 0.1).all()  # head above the feet: y up


def test_units_tracks_and_frame_time(tmp_path, toy_body_model):
    _recording(tmp_path / "run.npz", toy_body_model, fps=0)  # no fps: from the capture times
    (m,) = export_recording(tmp_path / "run.npz", tmp_path / "m", [6], body=toy_body_model)
    (cm,) = export_recording(tmp_path / "run.npz", tmp_path / "cm", [6], unit="cm",
                             body=toy_body_model)  # fmt: skip
    _, _, off_m, t_m, v_m = _parse(m.read_text())
    _, _, off_cm, t_cm, v_cm = _parse(cm.read_text())
    assert t_m == pytest.approx(0.1) and t_cm == t_m and len(v_m) == 3  # frames 1-3
    np.testing.assert_allclose(off_cm, 100 * off_m, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(v_cm[:, :3], 100 * v_m[:, :3], atol=1e-3)  # 6 decimals
    np.testing.assert_allclose(v_cm[:, 3:], v_m[:, 3:], atol=1e-5)  # angles unchanged
    with pytest.raises(ValueError, match=r"tracks \[5\] are not in .* \(it has \[4, 6\]\)"):
        export_recording(tmp_path / "run.npz", tmp_path, [5], body=toy_body_model)
    with pytest.raises(ValueError, match="unit must be one of"):
        export_recording(tmp_path / "run.npz", tmp_path, unit="inch", body=toy_body_model)
    (al,) = export_recording(tmp_path / "run.npz", tmp_path / "al", [6], body=toy_body_model,
                             align=True)  # fmt: skip
    v_al = _parse(al.read_text())[4]  # starts at frame 0 like track 4: its first pose twice
    assert len(v_al) == 4
    np.testing.assert_array_equal(v_al[0], v_al[1])
    np.testing.assert_array_equal(v_al[1:], v_m)
    for bad in (0.0, -5.0):
        with pytest.raises(ValueError, match="--fps must be a number above 0"):
            export_recording(tmp_path / "run.npz", tmp_path, fps=bad, body=toy_body_model)


def test_frame_time_counts_the_frames_a_live_source_dropped():
    """A live run recorded frames 0, 2, 3 and 6 of a 25 fps camera (the others dropped): the
    capture times advance 0.04 s a frame index, and one BVH frame is one frame index."""
    from realtime.motion import frame_time_of

    k = np.array([0, 2, 3, 6])
    rec = {"frames_index": k, "frames_t_capture_s": 100 + 0.04 * k,
           "meta_json": np.asarray("{}")}  # fmt: skip
    assert frame_time_of(rec) == pytest.approx(0.04)
    assert frame_time_of(rec, fps=50) == pytest.approx(0.02)
    rec["meta_json"] = np.asarray(json.dumps({"fps": 30}))
    assert frame_time_of(rec) == pytest.approx(1 / 30)
    assert frame_time_of({"meta_json": np.asarray("{}")}) == pytest.approx(1 / 30)


def test_cli_writes_files_and_refuses_in_one_line(tmp_path, toy_body_model_path, monkeypatch,
                                                  capsys, caplog):  # fmt: skip
    monkeypatch.setenv("MULTIROI_BODY_MODEL", str(toy_body_model_path))
    from multiroi.body import load_body_model

    _recording(tmp_path / "run.npz", load_body_model(toy_body_model_path))
    assert main([str(tmp_path / "run.npz"), "--track", "4"]) == 0
    assert capsys.readouterr().out.strip().endswith("run_track4.bvh")
    assert (tmp_path / "run_track4.bvh").exists() and not (tmp_path / "run_track6.bvh").exists()
    np.savez(tmp_path / "other.npz", boxes=np.zeros((2, 4)))
    assert main([str(tmp_path / "other.npz")]) == 2
    assert "lacks frame_index" in caplog.text and "run_camera.py --out DIR" in caplog.text
    assert main([str(tmp_path / "missing.npz")]) == 2
    rec = _recording(tmp_path / "e.npz", load_body_model(toy_body_model_path))
    rows = ("frame_index", "track_id", "rotmat", "betas", "transl_m")
    empty = {k: v[:0] if k in rows else v for k, v in rec.items()}
    np.savez(tmp_path / "nobody.npz", **empty)
    assert main([str(tmp_path / "nobody.npz")]) == 2 and "has no persons" in caplog.text
