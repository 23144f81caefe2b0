"""RoI boxes, windows, crops and CLIFF box information (multiroi.rois)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from multiroi import rois
from multiroi.geometry.camera import Camera
from multiroi.types import RoiBatch


def test_roi_table_matches_method():
    offsets, factors = rois.roi_offsets_factors(5)
    np.testing.assert_allclose(
        offsets, [[0, 0], [0.1, 0], [-0.1, 0], [0, 0.1], [0, -0.1]], atol=1e-7
    )
    np.testing.assert_allclose(factors, [1.0, 1.5, 1.25, 0.8, 0.65], atol=1e-7)
    for r in range(1, 5):  # R < 5 uses the first R RoIs
        o, f = rois.roi_offsets_factors(r)
        assert o.shape == (r, 2) and f.shape == (r,)
        np.testing.assert_array_equal(o, offsets[:r])
        np.testing.assert_array_equal(f, factors[:r])
    o9, f9 = rois.roi_offsets_factors(9)
    np.testing.assert_allclose(f9, [1.0, 1.6, 1.45, 1.3, 1.15, 0.85, 0.7, 0.55, 0.4], atol=1e-7)
    assert np.all(o9[0] == 0)
    # the 8 extra offsets are exactly the set named in method.md
    got = {(round(float(x), 3), round(float(y), 3)) for x, y in o9[1:]}
    assert got == {(0.1, 0), (-0.1, 0), (0, 0.1), (0, -0.1), (0.1, 0.1), (-0.1, -0.1),
                   (0.1, -0.1), (-0.1, 0.1)}  # fmt: skip
    with pytest.raises(ValueError, match="num_rois"):
        rois.roi_offsets_factors(6)


def test_base_box_rule():
    boxes = np.array(
        [
            [10, 20, 110, 420],  # w 100, h 400: tall, b = 400 * 1.2
            [0, 0, 300, 100],  # w 300, h 100: wide, b = 300 * 4/3 * 1.2
            [50, 50, 80, 90],  # w 30, h 40: exactly 3:4, b = 40 * 1.2
        ],
        np.float32,
    )
    centers, sizes = rois.base_boxes(boxes)
    np.testing.assert_allclose(centers, [[60, 220], [150, 50], [65, 70]], atol=1e-5)
    np.testing.assert_allclose(sizes, [480.0, 480.0, 48.0], rtol=1e-6)
    assert centers.dtype == np.float32 and sizes.dtype == np.float32


def test_keypoints_to_boxes():
    kp = np.zeros((3, 4, 3), np.float32)
    kp[0] = [[10, 20, 1], [50, 5, 0.9], [30, 80, 1], [500, 500, 0]]  # last one hidden
    kp[1] = [[10, 20, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]]  # one visible keypoint only
    kp[2, :, 2] = 1
    kp[2, :, :2] = [[1, 2], [3, 4], [5, 6], [7, 9]]
    boxes = rois.keypoints_to_boxes(kp)
    np.testing.assert_allclose(boxes[0], [10, 5, 50, 80])
    np.testing.assert_allclose(boxes[2], [1, 2, 7, 9])
    assert np.isnan(boxes[1]).all()
    assert rois.valid_box_mask(boxes).tolist() == [True, False, True]
    assert rois.keypoints_to_boxes(kp, min_conf=0.95)[0].tolist() == [10, 20, 30, 80]


def test_roi_windows_numbers():
    centers, sizes = rois.roi_windows(np.array([[100.0, 200.0]]), np.array([50.0]), 5)
    assert centers.shape == (1, 5, 2) and sizes.shape == (1, 5)
    np.testing.assert_allclose(
        centers[0], [[100, 200], [105, 200], [95, 200], [100, 205], [100, 195]], atol=1e-5
    )
    np.testing.assert_allclose(sizes[0], [50, 75, 62.5, 40, 32.5], atol=1e-5)


@pytest.mark.parametrize(
    "box",
    [[10, 10, 10, 50], [10, 10, 5, 50], [10, 60, 20, 50], [np.nan, 0, 10, 10], [0, 0, np.inf, 9]],
)
def test_bad_boxes_raise_with_index(box):
    boxes = np.array([[0, 0, 10, 10], box], np.float32)
    with pytest.raises(ValueError, match="box 1"):
        rois.base_boxes(boxes)
    assert rois.valid_box_mask(boxes).tolist() == [True, False]


def test_valid_box_mask_min_size_and_shape():
    boxes = np.array([[0, 0, 3, 10], [0, 0, 10, 10]], np.float32)
    assert rois.valid_box_mask(boxes, min_size_px=5).tolist() == [False, True]
    with pytest.raises(ValueError, match=r"\[N,4\]"):
        rois.base_boxes(np.zeros((3, 5)))


def _pattern_image() -> np.ndarray:
    """640x480 black image with one filled rectangle: columns 100..139, rows 80..159."""
    image = np.zeros((480, 640, 3), np.uint8)
    image[80:160, 100:140] = (200, 50, 10)
    return image


def _denormalise(crops: np.ndarray) -> np.ndarray:
    """f32[...,3,H,W] normalised -> f32[...,H,W,3] in 0..255."""
    x = np.moveaxis(crops, -3, -1)
    return (x * rois.IMAGENET_STD + rois.IMAGENET_MEAN) * 255.0


def test_crop_places_pattern_where_predicted():
    # window centred on (120, 120) px, 128 px tall -> 2 crop px per image px
    centers = np.array([[[120.0, 120.0]]], np.float32)
    sizes = np.array([[128.0]], np.float32)
    crops = rois.crop_rois(_pattern_image(), centers, sizes)
    assert crops.shape == (1, 1, 3, 256, 192) and crops.dtype == np.float32
    rgb = _denormalise(crops)[0, 0]
    # rectangle spans x 100..140, y 80..160 -> crop u = 96 + 2 (x - 120) = 56..136,
    # v = 128 + 2 (y - 120) = 48..208 (interior pixels exact, a 1-px blended edge)
    np.testing.assert_allclose(rgb[50:206, 58:134], np.broadcast_to([200, 50, 10], (156, 76, 3)),
                               atol=0.01)  # fmt: skip
    assert np.abs(rgb[:, :54]).max() < 0.01 and np.abs(rgb[:, 138:]).max() < 0.01
    assert np.abs(rgb[:46]).max() < 0.01 and np.abs(rgb[210:]).max() < 0.01
    # half-pixel convention: crop column u has its centre at image x = 120 + (u + 0.5 - 96) / 2,
    # i.e. source index x - 0.5: u = 54, 55, 56, 57 -> 98.75, 99.25, 99.75, 100.25; the edge is
    # between indices 99 (black) and 100 (colour), so bilinear gives 0, 1/4, 3/4, 1 of 200
    np.testing.assert_allclose(rgb[128, 54:58, 0], [0, 50, 150, 200], atol=1.0)


def test_antialias_removes_aliasing_and_keeps_geometry():
    # 1-px black/white stripes seen through a 1000 px window (3.9 image px per crop px)
    image = np.zeros((1200, 1600, 3), np.uint8)
    image[:, ::2] = 255
    centers = np.array([[[800.0, 600.0]]], np.float32)
    sizes = np.array([[1000.0]], np.float32)
    plain = _denormalise(rois.crop_rois(image, centers, sizes))[0, 0]
    smooth = _denormalise(rois.crop_rois(image, centers, sizes, antialias=True))[0, 0]
    # plain bilinear hits single stripes: far from the true mean 127.5; the pyramid averages
    assert np.abs(plain[8:-8, 8:-8] - 127.5).max() > 60
    assert np.abs(smooth[8:-8, 8:-8] - 127.5).max() < 2
    # geometry is unchanged: a 64x64 px white square lands at the same crop pixels
    image2 = np.zeros((1200, 1600, 3), np.uint8)
    image2[568:632, 768:832] = 255  # centred on the window centre
    a = _denormalise(rois.crop_rois(image2, centers, sizes))[0, 0, :, :, 0]
    b = _denormalise(rois.crop_rois(image2, centers, sizes, antialias=True))[0, 0, :, :, 0]
    # the square spans crop u = 96 +- 8.2, v = 128 +- 8.2
    for img in (a, b):
        assert img[121:135, 89:103].min() > 250 and img[:118].max() < 1 and img[138:].max() < 1
        assert img[:, :86].max() < 1 and img[:, 106:].max() < 1
    # small windows are unaffected
    small = (np.array([[[120.0, 120.0]]], np.float32), np.array([[128.0]], np.float32))
    plain_small = rois.crop_rois(_pattern_image(), *small)
    np.testing.assert_array_equal(
        plain_small, rois.crop_rois(_pattern_image(), *small, antialias=True)
    )


def test_crop_matches_rgb_and_bgr_input():
    image = _pattern_image()
    centers = np.array([[[120.0, 120.0], [300.0, 200.0]]], np.float32)
    sizes = np.array([[128.0, 300.0]], np.float32)
    a = rois.crop_rois(image, centers, sizes)
    b = rois.crop_rois(np.ascontiguousarray(image[..., ::-1]), centers, sizes, input_bgr=True)
    np.testing.assert_array_equal(a, b)


def test_out_of_image_windows_zero_padded():
    image = np.full((100, 200, 3), 255, np.uint8)
    # half outside on the left: window x in [-37.5, 37.5] for b = 100 centred at x = 0
    centers = np.array([[[0.0, 50.0], [1000.0, 1000.0]]], np.float32)
    sizes = np.array([[100.0, 100.0]], np.float32)
    rgb = _denormalise(rois.crop_rois(image, centers, sizes))[0]
    assert np.abs(rgb[0, :, :94]).max() < 0.01  # left half (x < 0) is zero padding
    # right half is image (rows 0 and 255 blend with the zero border: their centres lie within
    # half a pixel of the image edge)
    np.testing.assert_allclose(rgb[0, 1:255, 98:], 255.0, atol=0.01)
    assert np.abs(rgb[1]).max() < 0.01  # wholly outside: all zero before normalisation
    # after normalisation a zero pixel is -mean/std
    raw = rois.crop_rois(image, centers, sizes)[0, 1, :, 0, 0]
    np.testing.assert_allclose(raw, -rois.IMAGENET_MEAN / rois.IMAGENET_STD, rtol=1e-6)


def test_crop_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        rois.crop_rois(np.zeros((10, 10, 3), np.float32), np.zeros((1, 1, 2)), np.ones((1, 1)))
    with pytest.raises(ValueError, match="positive"):
        rois.crop_rois(np.zeros((10, 10, 3), np.uint8), np.zeros((1, 1, 2)), np.zeros((1, 1)))


def test_box_info_by_hand():
    cam = Camera.from_focal(500.0, (640, 480))
    centers = np.array([[420.0, 140.0]])
    sizes = np.array([150.0])
    info = rois.box_info(centers, sizes, cam)
    # [2.8 * 100 / 500, 2.8 * -100 / 500, (150 - 120) / 30]
    np.testing.assert_allclose(info, [[0.56, -0.56, 1.0]], rtol=1e-6)
    # the principal point of the camera is used, not the image centre
    cam2 = Camera(np.array([[500.0, 0, 420.0], [0, 500.0, 140.0], [0, 0, 1]]), (640, 480))
    np.testing.assert_allclose(rois.box_info(centers, sizes, cam2)[0, :2], [0, 0], atol=1e-7)


def test_make_roi_batch_end_to_end():
    image_rgb = _pattern_image()
    image_bgr = np.ascontiguousarray(image_rgb[..., ::-1])
    boxes = np.array([[100, 80, 140, 160], [300, 100, 400, 400]], np.float32)
    cam = Camera.default((640, 480))
    batch = rois.make_roi_batch(image_bgr, boxes, 5, cam)
    assert isinstance(batch, RoiBatch) and len(batch) == 2
    assert batch.crops.shape == (2, 5, 3, 256, 192)
    assert batch.box_info.shape == (2, 5, 3) and batch.centers.shape == (2, 5, 2)
    assert batch.image_wh == (640, 480)
    assert math.isclose(batch.focal_px, 800.0)
    # RoI 0 of person 0 is centred on the rectangle: its centre pixel has the rectangle colour
    centre = _denormalise(batch.crops[0, 0])[128, 96]
    np.testing.assert_allclose(centre, [200, 50, 10], atol=0.01)
    # box info of RoI 0 agrees with a hand computation
    b0 = 96.0  # max(40 * 4/3, 80) * 1.2
    np.testing.assert_allclose(
        batch.box_info[0, 0], [2.8 * -200 / 800, 2.8 * -120 / 800, (b0 - 192) / 48], rtol=1e-5
    )
    empty = rois.make_roi_batch(image_bgr, np.zeros((0, 4), np.float32), 3, cam)
    assert empty.crops.shape == (0, 3, 3, 256, 192) and empty.box_info.shape == (0, 3, 3)
    with pytest.raises(ValueError, match="scaled_to"):
        rois.make_roi_batch(image_bgr, boxes, 5, Camera.default((1280, 960)))
