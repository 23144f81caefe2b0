"""realtime.score: a recording of the demo clip scored against its ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from realtime.score import main, match_rows, score_files, score_recording

N, P = 8, 2  # frames, persons


def _rotations(n: int, seed: int) -> np.ndarray:
    """f32[n,24,3,3] small random joint rotations (Rodrigues of 0.3 rad vectors)."""
    import cv2

    rng = np.random.default_rng(seed)
    aa = rng.normal(0, 0.3, (n, 24, 3))
    return np.stack([[cv2.Rodrigues(v)[0] for v in person] for person in aa]).astype(np.float32)


@pytest.fixture(scope="module")
def gt(toy_body_model):
    """Ground truth in the demo clip's layout: 2 people walking sideways, 8 frames."""
    rotmat = _rotations(N * P, 0).reshape(N, P, 24, 3, 3)
    betas = np.zeros((N, P, 10), np.float32)
    transl = np.zeros((N, P, 3), np.float32)
    transl[:, 0, 0] = np.linspace(-1.0, -0.5, N)
    transl[:, 1, 0] = 1.0
    transl[..., 2] = [3.0, 5.0]
    with torch.no_grad():
        out = toy_body_model(torch.from_numpy(rotmat.reshape(-1, 24, 3, 3)),
                             torch.from_numpy(betas.reshape(-1, 10)),
                             torch.from_numpy(transl.reshape(-1, 3)))  # fmt: skip
    box = np.zeros((N, P, 4), np.float32)
    box[:, 0] = [100, 50, 200, 300]
    box[:, 1] = [400, 80, 460, 240]
    box[:, 0, [0, 2]] += np.arange(N)[:, None] * 10
    return {"box_xyxy": box, "box_amodal": box.copy(), "visible": np.ones((N, P), bool),
            "rotmat": rotmat, "betas": betas, "transl": transl,
            "joints": out.joints.numpy().reshape(N, P, 24, 3)}  # fmt: skip


def _recording(gt: dict, rotmat: np.ndarray | None = None) -> dict:
    """A perfect recording of gt (track ids 7 and 9), optionally with other rotations."""
    k, p = np.meshgrid(np.arange(N), np.arange(P), indexing="ij")
    k, p = k.ravel(), p.ravel()
    return {"frame_index": k, "track_id": np.where(p == 0, 7, 9),
            "box_xyxy": gt["box_xyxy"][k, p] + 3.0,  # a few px off: matched by IoU
            "rotmat": gt["rotmat"][k, p] if rotmat is None else rotmat,
            "betas": gt["betas"][k, p], "transl_m": gt["transl"][k, p],
            "frames_index": np.arange(N),
            "meta_json": np.asarray(json.dumps({}))}  # fmt: skip


def test_the_truth_scores_zero(gt, toy_body_model):
    rec = _recording(gt)
    rec["held"] = rec["frame_index"] >= N - 3  # the last 3 frames' rows held
    s = score_recording(rec, gt, toy_body_model)
    assert (s.frames, s.true_persons, s.matched, s.false_rows, s.id_switches) == (N, N * P,
                                                                                 N * P, 0, 0)
    assert s.held_matched == 3 * P and f"of {N * P} ({3 * P} held)" in s.describe()
    assert abs(s.pa_mpjpe_not_held_mm) < 1e-3 and "on the rows not held" in s.describe()
    assert s.recall == 1.0 and s.idf1 == 1.0
    for v in (s.pa_mpjpe_mm, s.mpjpe_mm, s.accel_err_mm, s.position_err_m, s.depth_err_m):
        assert abs(v) < 1e-3
    assert s.mean_pose_pa_mpjpe_mm > 10 and s.pose_ratio < 1e-4
    rec = _recording(gt, rotmat=_rotations(N * P, 1))  # wrong poses ...
    rec["rotmat"][rec["frame_index"] < N - 3] = gt["rotmat"][:N - 3].reshape(-1, 24, 3, 3)
    rec["held"] = rec["frame_index"] >= N - 3  # ... only in the held rows
    s = score_recording(rec, gt, toy_body_model)
    assert s.pa_mpjpe_mm > 5 and abs(s.pa_mpjpe_not_held_mm) < 1e-3


def test_errors_switches_misses_and_false_rows_are_counted(gt, toy_body_model):
    rec = _recording(gt, rotmat=_rotations(N * P, 1))  # other poses
    rec["transl_m"] = rec["transl_m"] + np.float32([0, 0, 0.5])  # 0.5 m too far
    rec["track_id"] = np.where(rec["frame_index"] >= 4, 20 + rec["track_id"], rec["track_id"])
    keep = ~((rec["frame_index"] == 2) & (rec["track_id"] == 9))  # person 1 missed once
    rec = {k: (v[keep] if v.ndim and len(v) == N * P else v) for k, v in rec.items()}
    rec["box_xyxy"][0] = [600, 400, 640, 480]  # a row on nobody
    s = score_recording(rec, gt, toy_body_model)
    assert s.matched == N * P - 2 and s.false_rows == 1 and s.recall == (N * P - 2) / (N * P)
    assert s.id_switches == 2  # each person's track id changes once
    # each person keeps one id over 4 of their rows (frames 4-7); 15 rows, 16 in view
    assert s.idf1 == pytest.approx(2 * (4 + 4) / (15 + 16))
    assert s.pa_mpjpe_mm > 20 and s.mpjpe_mm >= s.pa_mpjpe_mm and s.accel_err_mm > 1
    assert s.depth_err_m == pytest.approx(0.5, abs=1e-4)
    assert s.position_err_m == pytest.approx(0.5, abs=1e-4)


def test_rows_are_matched_to_the_box_that_fits_best(gt):
    rec = _recording(gt)
    rec["box_xyxy"] = rec["box_xyxy"][::-1].copy()  # persons reversed, frames too
    who = match_rows(rec, gt)
    assert (who == -1).sum() > 0  # another frame's boxes do not all fit
    rec = _recording(gt)
    np.testing.assert_array_equal(match_rows(rec, gt), np.tile([0, 1], N))


def test_a_track_keeps_its_person_while_their_boxes_overlap_as_in_clear_mot():
    """One person just behind another (boxes IoU 0.43): in frame 1 each track's box fits the
    other person a little better (IoU 0.70 against 0.64). The tracks keep their persons (IoU
    >= 0.5): no id switch; a track that moves off its person (IoU < 0.5) is matched afresh."""
    p0, p1 = [100, 100, 200, 300], [140, 100, 240, 300]
    gt = {"box_xyxy": np.float32([[p0, p1]] * 3), "visible": np.ones((3, 2), bool)}
    t7 = [p0, [122, 100, 222, 300], p0]
    t9 = [p1, [118, 100, 218, 300], p1]
    rec = {"frame_index": np.repeat(np.arange(3), 2), "track_id": np.tile([7, 9], 3),
           "box_xyxy": np.float32([b for pair in zip(t7, t9, strict=True) for b in pair])}
    np.testing.assert_array_equal(match_rows(rec, gt), np.tile([0, 1], 3))
    rec["box_xyxy"][2:4] = [p1, p0]  # frame 1: the boxes are swapped outright
    np.testing.assert_array_equal(match_rows(rec, gt), [0, 1, 1, 0, 0, 1])


def test_cli_writes_the_score_and_refuses_in_one_line(gt, toy_body_model_path, tmp_path,
                                                      monkeypatch, capsys):  # fmt: skip
    monkeypatch.setenv("MULTIROI_BODY_MODEL", str(toy_body_model_path))
    np.savez(tmp_path / "gt.npz", **gt)
    rec = _recording(gt)
    rec["meta_json"] = np.asarray(json.dumps({"ground_truth": str(tmp_path / "gt.npz")}))
    np.savez(tmp_path / "run.npz", **rec)
    assert main([str(tmp_path / "run.npz")]) == 0
    saved = json.loads((tmp_path / "run_score.json").read_text())
    assert saved["matched"] == N * P and saved["pa_mpjpe_mm"] < 1e-3
    assert "demo score over 8 frames" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.npz")]) == 2
    rec["meta_json"] = np.asarray("{}")
    np.savez(tmp_path / "other.npz", **rec)
    with pytest.raises(ValueError, match="--gt"):
        score_files(tmp_path / "other.npz")
    assert main([str(tmp_path / "other.npz"), "--gt", str(tmp_path / "run.npz")]) == 2


def test_a_short_run_writes_strict_json_and_a_foreign_recording_is_refused(gt, toy_body_model,
                                                                           tmp_path):  # fmt: skip
    """Two frames: no acceleration to average, written as null (not NaN, which strict JSON
    parsers reject). A recording of other-sized frames is not scored against the clip."""
    np.savez(tmp_path / "gt.npz", **gt, image_wh=np.array([640, 480]))
    rec = _recording(gt)
    keep = rec["frame_index"] < 2
    rec = {k: (v[keep] if v.ndim and len(v) == len(keep) else v) for k, v in rec.items()}
    rec["image_wh"] = np.array([640, 480])
    np.savez(tmp_path / "short.npz", **rec)
    score_files(tmp_path / "short.npz", tmp_path / "gt.npz", tmp_path / "short.json",
                toy_body_model)  # fmt: skip
    saved = json.loads((tmp_path / "short.json").read_text(),
                       parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))  # fmt: skip
    assert saved["accel_err_mm"] is None and saved["matched"] == 2 * P
    rec["image_wh"] = np.array([1024, 512])
    np.savez(tmp_path / "other.npz", **rec)
    with pytest.raises(ValueError, match=r"\(1024, 512\) px frames, the ground truth of "
                                          r"\(640, 480\): not a recording of this clip"):
        score_files(tmp_path / "other.npz", tmp_path / "gt.npz", body=toy_body_model)
    with pytest.raises(ValueError, match="the folder .* does not exist"):
        score_files(tmp_path / "short.npz", tmp_path / "gt.npz", tmp_path / "no" / "s.json",
                    toy_body_model)  # fmt: skip
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not an .npz file .*demo_gt.npz"):
        score_files(tmp_path / "short.npz", tmp_path / "junk.npz", body=toy_body_model)
