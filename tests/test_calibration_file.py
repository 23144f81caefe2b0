"""Calibration files: our YAML round trip, OpenCV FileStorage and ROS files, one-line errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from multiroi.geometry.calibration_file import (
    CalibrationData,
    CalibrationFileError,
    read_calibration,
    write_calibration,
)

WH = (640, 480)
K_TRUE = np.array([[600.0, 0.0, 322.0], [0.0, 600.0, 236.0], [0.0, 0.0, 1.0]])
DIST_TRUE = np.array([-0.28, 0.09, 0.0008, -0.0005, 0.0])


def _data() -> CalibrationData:
    return CalibrationData(K_TRUE, DIST_TRUE, WH, 0.123, "2025-01-31T12:00:00+00:00", "9x6", 14)


def test_yaml_round_trip(tmp_path):
    path = write_calibration(tmp_path / "sub" / "camera.yaml", _data())
    back = read_calibration(path)
    np.testing.assert_array_equal(back.K, K_TRUE)
    np.testing.assert_array_equal(back.dist, DIST_TRUE)
    assert back.image_wh == WH and back.rms_px == 0.123 and back.num_views == 14
    assert back.date == "2025-01-31T12:00:00+00:00" and back.board == "9x6"
    text = path.read_text()
    for key in ("K:", "dist:", "image_size:", "rms_px:", "date:"):
        assert key in text
    assert [p.name for p in path.parent.iterdir()] == ["camera.yaml"]  # no temp files left


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found"),
        ("K: [[1, 2], [3\n", "not valid YAML"),
        ("- 1\n- 2\n", "expected a YAML mapping"),
        ("K: [[600,0,320],[0,600,240],[0,0,1]]\ndist: [0,0,0,0]\n", "missing key 'image_size'"),
        ("K: [[600,0,320],[0,600,240]]\ndist: []\nimage_size: [640,480]\n", "must be 3x3"),
        ("K: [[600,0,320],[0,600,240],[0,0,1]]\ndist: [1,2,3]\nimage_size: [640,480]\n", "dist"),
        ("K: [[600,0,320],[0,600,240],[0,0,1]]\ndist: []\nimage_size: 640\n", "image_size"),
    ],
)
def test_bad_calibration_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "cam.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CalibrationFileError, match=message) as info:
        read_calibration(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_reads_opencv_filestorage_and_ros_yaml(tmp_path):
    p = str(tmp_path / "ocv.yaml")
    fs = cv2.FileStorage(p, cv2.FILE_STORAGE_WRITE)
    fs.write("image_width", 640)
    fs.write("image_height", 480)
    fs.write("camera_matrix", K_TRUE)
    fs.write("distortion_coefficients", DIST_TRUE.reshape(1, 5))
    fs.write("avg_reprojection_error", 0.3)
    fs.release()
    data = read_calibration(p)
    np.testing.assert_allclose(data.K, K_TRUE)
    np.testing.assert_allclose(data.dist, DIST_TRUE)
    assert data.image_wh == WH and data.rms_px == pytest.approx(0.3)

    ros = tmp_path / "ros.yaml"
    ros.write_text(
        "image_width: 640\nimage_height: 480\ncamera_name: cam\n"
        f"camera_matrix: {{rows: 3, cols: 3, data: {K_TRUE.ravel().tolist()}}}\n"
        f"distortion_coefficients: {{rows: 1, cols: 5, data: {DIST_TRUE.tolist()}}}\n"
    )
    data = read_calibration(ros)
    np.testing.assert_allclose(data.K, K_TRUE)
    assert data.image_wh == WH
