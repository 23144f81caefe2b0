"""realtime.gltf: a recording as one .glb whose skinned meshes, posed by its own animation, give
back the body model's meshes, with people hidden while they are not in the recording."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from realtime.gltf import export_glb, main, quaternions_xyzw, skin_weights
from tests.test_bvh import _recording

C = np.diag([1.0, -1.0, -1.0])  # camera axes -> glTF's Y-up


def _read_glb(path):
    """(JSON document, accessor reader) of a .glb, checking its container layout."""
    data = path.read_bytes()
    magic, version, total = struct.unpack_from("<III", data, 0)
    assert (magic, version, total) == (0x46546C67, 2, len(data))
    n_json, kind = struct.unpack_from("<II", data, 12)
    assert kind == 0x4E4F534A and n_json % 4 == 0
    doc = json.loads(data[20 : 20 + n_json])
    n_bin, kind = struct.unpack_from("<II", data, 20 + n_json)
    assert kind == 0x004E4942 and n_bin % 4 == 0 and 28 + n_json + n_bin == len(data)
    binary = data[28 + n_json :]
    assert doc["buffers"] == [{"byteLength": n_bin}]
    dtypes = {5126: np.float32, 5125: np.uint32, 5123: np.uint16, 5121: np.uint8}
    sizes = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}

    def read(i):
        acc = doc["accessors"][i]
        view = doc["bufferViews"][acc["bufferView"]]
        dtype = np.dtype(dtypes[acc["componentType"]])
        assert view["byteOffset"] % 4 == 0
        n = acc["count"] * sizes[acc["type"]]
        assert n * dtype.itemsize == view["byteLength"]
        out = np.frombuffer(binary, dtype, n, view["byteOffset"]).reshape(acc["count"], -1)
        if "min" in acc:
            np.testing.assert_allclose(out.min(0), acc["min"], rtol=1e-6)
            np.testing.assert_allclose(out.max(0), acc["max"], rtol=1e-6)
        return out

    return doc, read


def _quat_matrix(q):
    from scipy.spatial.transform import Rotation

    return Rotation.from_quat(np.asarray(q, np.float64)).as_matrix()


def _pose(doc, read, t):
    """Node global 4x4 transforms at time ``t`` s, which must be a key of every LINEAR sampler
    whose keys span it (before its first key or after its last: clamped, as glTF says)."""
    local = {}
    for i, node in enumerate(doc["nodes"]):
        m = np.eye(4)
        m[:3, :3] = _quat_matrix(node.get("rotation", [0, 0, 0, 1]))
        m[:3, :3] *= node.get("scale", [1, 1, 1])
        m[:3, 3] = node.get("translation", [0, 0, 0])
        local[i] = m
    anim = doc["animations"][0]
    trs = {}
    for ch in anim["channels"]:
        s = anim["samplers"][ch["sampler"]]
        times, values = read(s["input"]).ravel(), read(s["output"])
        k = int(np.searchsorted(times, t + 1e-6) - 1)  # the last key at or before t
        if s["interpolation"] == "LINEAR" and 0 <= k < len(times) - 1:
            assert abs(times[k] - t) < 1e-6, "t must be a key"
        trs.setdefault(ch["target"]["node"], {})[ch["target"]["path"]] = values[max(k, 0)]
    for i, paths in trs.items():
        m = local[i].copy()
        r = _quat_matrix(paths["rotation"]) if "rotation" in paths else np.eye(3)
        if "rotation" in paths:
            m[:3, :3] = r
        if "scale" in paths:
            m[:3, :3] = np.eye(3) * paths["scale"]
        if "translation" in paths:
            m[:3, 3] = paths["translation"]
        local[i] = m
    parent = {c: i for i, n in enumerate(doc["nodes"]) for c in n.get("children", [])}
    glob = {}

    def g(i):
        if i not in glob:
            glob[i] = local[i] if i not in parent else g(parent[i]) @ local[i]
        return glob[i]

    return {i: g(i) for i in local}


def _skinned(doc, read, mesh_node, t):
    """f64[V,3]: the mesh of ``mesh_node`` posed by linear blend skinning at time ``t`` s."""
    node = doc["nodes"][mesh_node]
    skin = doc["skins"][node["skin"]]
    prim = doc["meshes"][node["mesh"]]["primitives"][0]
    verts = read(prim["attributes"]["POSITION"]).astype(np.float64)
    joints = read(prim["attributes"]["JOINTS_0"]).astype(np.int64)
    weights = read(prim["attributes"]["WEIGHTS_0"]).astype(np.float64)
    ibm = read(skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
    pose = _pose(doc, read, t)
    mats = np.stack([pose[j] @ ibm[k] for k, j in enumerate(skin["joints"])])
    vh = np.concatenate([verts, np.ones((len(verts), 1))], 1)
    per = np.einsum("vkab,vb->vka", mats[joints], vh)[..., :3]
    return np.einsum("vk,vka->va", weights, per)


def test_glb_meshes_are_the_body_models(tmp_path, toy_body_model):
    """Posed by the file's own animation, every track's mesh is the body model's mesh of its
    recorded row (in glTF axes), within what 4 skinning weights a vertex allow."""
    rec = _recording(tmp_path / "rec.npz", toy_body_model)
    path = export_glb(tmp_path / "rec.npz", body=toy_body_model, camera=False)
    assert path == tmp_path / "rec.glb" and not list(tmp_path.glob("*.partial"))
    doc, read = _read_glb(path)
    assert [n["name"] for n in doc["nodes"] if "skin" in n] == ["track4_body", "track6_body"]
    assert doc["animations"][0]["name"] == "recording"
    ref_weights = skin_weights(toy_body_model.layer.lbs_weights.numpy())
    mesh_nodes = {int(n["name"][5]): i for i, n in enumerate(doc["nodes"]) if "skin" in n}
    for row in range(len(rec["frame_index"])):
        tid, frame = int(rec["track_id"][row]), int(rec["frame_index"][row])
        got = _skinned(doc, read, mesh_nodes[tid], frame / 25.0)  # the recording's fps
        sel = rec["track_id"] == tid
        betas = np.median(rec["betas"][sel], axis=0)
        with torch.no_grad():
            out = toy_body_model(torch.as_tensor(rec["rotmat"][row : row + 1]),
                                 torch.as_tensor(betas[None], dtype=torch.float32),
                                 torch.as_tensor(rec["transl_m"][row : row + 1]))  # fmt: skip
        want = out.vertices[0].double().numpy() @ C.T
        full = (ref_weights[1].sum(1) > 0.999) & (
            np.sort(toy_body_model.layer.lbs_weights.numpy(), 1)[:, -5] < 1e-6
        )  # vertices with at most 4 influences are exact
        err = np.linalg.norm(got - want, axis=1)
        assert err[full].max() < 1e-4, (row, err[full].max())
        assert np.median(err) < 5e-3


def test_people_are_hidden_outside_their_rows(tmp_path, toy_body_model):
    """Track 6 appears at frame 1: its skeleton is scaled to zero before (a step key), track 4
    is there from the first frame to the last and has no scale key; the animation runs at the
    recording's fps; the camera is the recording's."""
    rec = _recording(tmp_path / "rec.npz", toy_body_model, fps=25.0)
    rec["K"] = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    rec["image_wh"] = np.array([640, 480])
    np.savez(tmp_path / "rec.npz", **rec)
    doc, read = _read_glb(export_glb(tmp_path / "rec.npz", tmp_path / "o" / "take.glb",
                                     body=toy_body_model))  # fmt: skip
    anim = doc["animations"][0]
    scaled = {doc["nodes"][c["target"]["node"]]["name"]: anim["samplers"][c["sampler"]]
              for c in anim["channels"] if c["target"]["path"] == "scale"}  # fmt: skip
    assert list(scaled) == ["track6"]
    assert scaled["track6"]["interpolation"] == "STEP"
    np.testing.assert_allclose(read(scaled["track6"]["input"]).ravel(), [0.0, 0.04])
    np.testing.assert_allclose(read(scaled["track6"]["output"])[:, 0], [0.0, 1.0])
    times = read(anim["samplers"][0]["input"]).ravel()
    np.testing.assert_allclose(times, np.arange(4) * 0.04, atol=1e-7)  # track 4: frames 0-3
    cam = doc["cameras"][0]["perspective"]
    assert cam["yfov"] == pytest.approx(2 * np.arctan(240 / 500))
    assert cam["aspectRatio"] == pytest.approx(640 / 480)
    assert doc["asset"]["version"] == "2.0" and doc["asset"]["extras"]["tracks"] == [4, 6]


def test_quaternions_keep_their_sign():
    """A joint turning steadily past 180 degrees keeps quaternions that never flip sign between
    frames (a viewer interpolating them would spin the long way round)."""
    from scipy.spatial.transform import Rotation

    angles = np.linspace(0, 2 * np.pi, 40)
    rot = Rotation.from_rotvec(np.outer(angles, [0, 1.0, 0])).as_matrix()[:, None]
    q = quaternions_xyzw(rot)[:, 0].astype(np.float64)
    assert (np.sum(q[1:] * q[:-1], -1) > 0).all()
    np.testing.assert_allclose(Rotation.from_quat(q).as_matrix(), rot[:, 0], atol=1e-6)


def test_cli_and_clear_errors(tmp_path, toy_body_model, capsys, monkeypatch):
    _recording(tmp_path / "rec.npz", toy_body_model)
    monkeypatch.setattr("multiroi.body.load_body_model", lambda *a, **k: toy_body_model)
    assert main([str(tmp_path / "rec.npz"), "--track", "6", "--no-camera"]) == 0
    doc, _ = _read_glb(tmp_path / "rec.glb")
    assert [n["name"] for n in doc["nodes"] if "skin" in n] == ["track6_body"]
    assert "cameras" not in doc
    assert main([str(tmp_path / "rec.npz"), "--track", "9"]) == 2
    assert main([str(tmp_path / "rec.npz"), "--out", str(tmp_path / "x.gltf")]) == 2
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert main([str(tmp_path / "bad.npz")]) == 2
    assert not list(tmp_path.glob("*.partial"))


def test_away_hidden_returns_merged_and_bad_rows_left_out(tmp_path, toy_body_model, caplog):
    """A person away for 40 frames is hidden through the gap (not slid across it) and hidden
    again after their last row; a track the live loop re-identified (meta "reid_aliases") joins
    its person; rows with NaN are left out with a warning; a K that is not 3x3 writes no
    camera; --track may be given twice."""
    frames = np.r_[np.arange(0, 10), np.arange(50, 60), np.arange(0, 70)]
    tracks = np.r_[np.full(10, 1), np.full(10, 5), np.full(70, 2)]  # 5: person 1 back
    n = len(frames)
    rng = np.random.default_rng(0)
    import cv2

    rot = np.stack([[cv2.Rodrigues(v)[0] for v in p] for p in rng.normal(0, 0.2, (n, 24, 3))])
    rot[:, 0] = np.diag([1.0, -1.0, -1.0])
    transl = np.column_stack([rng.uniform(-1, 1, n), np.full(n, 0.2), np.full(n, 4.0)])
    transl[3] = np.nan  # a broken row
    rec = {"frame_index": frames, "track_id": tracks, "rotmat": rot.astype(np.float32),
           "betas": np.zeros((n, 10), np.float32), "transl_m": transl.astype(np.float32),
           "frames_index": np.arange(70), "K": np.array([500.0, 500.0]),
           "meta_json": np.asarray(json.dumps({"fps": 10, "reid_aliases": {"5": 1}}))}  # fmt: skip
    np.savez(tmp_path / "rec.npz", **rec)
    doc, read = _read_glb(export_glb(tmp_path / "rec.npz", body=toy_body_model, floor="camera"))
    assert "1 of 90 rows hold non-finite values" in caplog.text
    assert [node["name"] for node in doc["nodes"] if "skin" in node] == ["track1_body",
                                                                         "track2_body"]
    assert "cameras" not in doc
    anim = doc["animations"][0]
    (scale,) = [anim["samplers"][c["sampler"]] for c in anim["channels"]
                if c["target"]["path"] == "scale"]  # fmt: skip
    np.testing.assert_allclose(read(scale["input"]).ravel(), [0.0, 1.0, 5.0, 6.0], atol=1e-6)
    np.testing.assert_allclose(read(scale["output"])[:, 0], [1.0, 0.0, 1.0, 0.0])
    assert main([str(tmp_path / "rec.npz"), "--track", "1", "--track", "2", "--floor",
                 "camera", "--out", str(tmp_path / "both.glb")]) == 0  # fmt: skip
    doc, _ = _read_glb(tmp_path / "both.glb")
    assert len(doc["skins"]) == 2
    assert main([str(tmp_path / "rec.npz"), "--fps", "inf"]) == 2
