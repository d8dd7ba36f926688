"""DetrDatasetMapper / LSJDatasetMapper: box transforms checked by hand, odd inputs, output format."""
import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import transforms as T
from detectron2.data.detection_utils import SizeMismatchError
from detectron2.structures import BoxMode

from codetr.data import DetrDatasetMapper, LSJDatasetMapper, detr_train_augmentation, read_image_rgb

W, H = 100, 60


def _image(tmp_path, name="img.png", size=(W, H)):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path = str(tmp_path / name)
    Image.fromarray(arr).save(path)
    return path, arr


def _dict(path, annotations, w=W, h=H):
    return {"file_name": path, "height": h, "width": w, "image_id": 7, "annotations": annotations}


def _box(x, y, w, h, cls=2, **extra):
    return {"bbox": [x, y, w, h], "bbox_mode": BoxMode.XYWH_ABS, "category_id": cls, **extra}


def test_flip_hand_checked(tmp_path):
    path, arr = _image(tmp_path)
    mapper = DetrDatasetMapper([T.RandomFlip(prob=1.0)])
    out = mapper(_dict(path, [_box(10, 20, 30, 10)]))
    # xyxy (10, 20, 40, 30) flipped in a 100-wide image -> (60, 20, 90, 30)
    assert out["instances"].gt_boxes.tensor.tolist() == [[60.0, 20.0, 90.0, 30.0]]
    assert out["instances"].gt_classes.tolist() == [2] and out["instances"].gt_classes.dtype == torch.int64
    assert torch.equal(out["image"], torch.from_numpy(arr[:, ::-1].copy()).permute(2, 0, 1))
    assert out["image"].dtype == torch.uint8
    assert (out["height"], out["width"], out["image_id"], out["file_name"]) == (H, W, 7, path)


def test_resize_and_flip_hand_checked(tmp_path):
    path, _ = _image(tmp_path)
    mapper = DetrDatasetMapper([T.RandomFlip(prob=1.0), T.ResizeShortestEdge(120, max_size=1000)])
    out = mapper(_dict(path, [_box(10, 20, 30, 10)]))
    assert tuple(out["image"].shape) == (3, 120, 200)  # short side 60 -> 120: scale 2
    assert out["instances"].image_size == (120, 200)
    assert torch.allclose(out["instances"].gt_boxes.tensor, torch.tensor([[120.0, 40.0, 180.0, 60.0]]))
    # max_size caps the long side: 60x100 -> short 120 would give long 200 > 150, so scale 1.5
    out = DetrDatasetMapper([T.ResizeShortestEdge(120, max_size=150)])(_dict(path, [_box(10, 20, 30, 10)]))
    assert tuple(out["image"].shape) == (3, 90, 150)
    assert torch.allclose(out["instances"].gt_boxes.tensor, torch.tensor([[15.0, 30.0, 60.0, 45.0]]))


def test_integer_json_boxes_are_not_truncated(tmp_path):
    path, _ = _image(tmp_path)
    out = DetrDatasetMapper([T.ResizeShortestEdge(90, max_size=1000)])(_dict(path, [_box(11, 21, 31, 11)]))
    # xyxy (11, 21, 42, 32) x 1.5
    assert torch.allclose(out["instances"].gt_boxes.tensor, torch.tensor([[16.5, 31.5, 63.0, 48.0]]))


def test_crop_clips_and_removes_boxes(tmp_path):
    path, arr = _image(tmp_path)
    crop = T.CropTransform(20, 10, 40, 30)  # x0, y0, w, h
    annos = [_box(10, 20, 30, 10, cls=1), _box(70, 40, 20, 15, cls=3), _box(25, 15, 5, 5, cls=0)]
    out = DetrDatasetMapper([crop])(_dict(path, annos))
    assert tuple(out["image"].shape) == (3, 30, 40)
    assert torch.equal(out["image"], torch.from_numpy(arr[10:40, 20:60].copy()).permute(2, 0, 1))
    # box 1 (10,20,40,30) -> (-10,10,20,20) clipped to (0,10,20,20); box 2 is outside; box 3 inside
    assert out["instances"].gt_boxes.tensor.tolist() == [[0.0, 10.0, 20.0, 20.0], [5.0, 5.0, 10.0, 10.0]]
    assert out["instances"].gt_classes.tolist() == [1, 0]


def test_all_boxes_cropped_away_keeps_image(tmp_path):
    path, _ = _image(tmp_path)
    out = DetrDatasetMapper([T.CropTransform(0, 0, 20, 20)])(_dict(path, [_box(70, 40, 20, 15)]))
    assert len(out["instances"]) == 0
    assert tuple(out["instances"].gt_boxes.tensor.shape) == (0, 4)
    assert out["instances"].gt_classes.dtype == torch.int64


def test_image_without_annotations_and_crowd(tmp_path):
    path, _ = _image(tmp_path)
    mapper = DetrDatasetMapper([T.ResizeShortestEdge(60, max_size=1000)])
    out = mapper(_dict(path, []))
    assert len(out["instances"]) == 0 and tuple(out["image"].shape) == (3, 60, 100)
    out = mapper(_dict(path, [_box(1, 1, 5, 5, iscrowd=1), _box(10, 10, 5, 5, segmentation=[[10, 10, 15, 10, 15, 15]])]))
    assert out["instances"].gt_boxes.tensor.tolist() == [[10.0, 10.0, 15.0, 15.0]]  # crowd dropped
    assert not out["instances"].has("gt_masks")


def test_test_mode_drops_annotations(tmp_path):
    path, _ = _image(tmp_path)
    out = DetrDatasetMapper([T.ResizeShortestEdge(120, max_size=1000)], is_train=False)(_dict(path, [_box(1, 1, 5, 5)]))
    assert "instances" not in out and "annotations" not in out
    assert tuple(out["image"].shape) == (3, 120, 200) and (out["height"], out["width"]) == (H, W)


def test_crop_branch_probability(tmp_path):
    path, _ = _image(tmp_path)
    plain, crop = [T.ResizeShortestEdge(30, max_size=1000)], [T.CropTransform(0, 0, 10, 10)]
    always = DetrDatasetMapper(plain, crop, crop_prob=1.0)
    never = DetrDatasetMapper(plain, crop, crop_prob=0.0)
    assert tuple(always(_dict(path, []))["image"].shape) == (3, 10, 10)
    assert tuple(never(_dict(path, []))["image"].shape) == (3, 30, 50)
    test_mode = DetrDatasetMapper(plain, crop, is_train=False, crop_prob=1.0)  # test mode never crops
    assert tuple(test_mode(_dict(path, []))["image"].shape) == (3, 30, 50)


def test_detr_augmentation_sizes_and_box_validity(tmp_path):
    path, _ = _image(tmp_path, size=(300, 200))
    annos = [_box(10, 20, 30, 10), _box(150, 100, 140, 90, cls=1), _box(0, 0, 300, 200, cls=4)]
    min_sizes = [96, 112, 128]
    mapper = DetrDatasetMapper(
        detr_train_augmentation(min_sizes, max_size=180),
        detr_train_augmentation(min_sizes, max_size=180, crop_resize_sizes=[100, 120], crop_size=[50, 90]),
    )
    np.random.seed(0)
    for _ in range(20):
        out = mapper(_dict(path, annos, w=300, h=200))
        _, h, w = out["image"].shape
        assert min(h, w) in min_sizes or max(h, w) in (179, 180)  # short side chosen, or long side capped
        boxes = out["instances"].gt_boxes.tensor
        assert len(boxes) >= 1  # the full-image box always survives a crop
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= w).all() and (boxes[:, [1, 3]] <= h).all()


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "I;16", "CMYK"])
def test_odd_image_modes_become_rgb(tmp_path, mode):
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    path = str(tmp_path / ("x.png" if mode != "CMYK" else "x.jpg"))
    if mode == "I;16":
        gray = np.full((4, 6), 257 * 100, dtype=np.uint16)
        gray[0, 0] = 65535
        Image.fromarray(gray).save(path)
        expected = np.full((4, 6, 3), 100, dtype=np.uint8)
        expected[0, 0] = 255  # scaled to 8 bits, not clipped
    else:
        Image.fromarray(rgb).convert(mode).save(path)
        expected = np.asarray(Image.fromarray(rgb).convert(mode).convert("RGB"))
    arr = read_image_rgb(path)
    assert arr.shape == (4, 6, 3) and arr.dtype == np.uint8
    if mode != "CMYK":  # JPEG is lossy
        assert np.array_equal(arr, expected)
    out = DetrDatasetMapper([T.NoOpTransform()])(_dict(path, [], w=6, h=4))
    assert tuple(out["image"].shape) == (3, 4, 6)


def test_gray_16bit_png_scaled(tmp_path):
    path = str(tmp_path / "g16.png")
    Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)).save(path)  # PIL opens it as I / I;16
    arr = read_image_rgb(path)
    assert arr[0, 0].tolist() == [0, 0, 0] and arr[0, 1].tolist() == [255, 255, 255]


def test_unreadable_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(OSError, match="broken.png"):
        DetrDatasetMapper([T.NoOpTransform()])(_dict(str(bad), []))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image_rgb(str(tmp_path / "missing.png"))
    path, _ = _image(tmp_path)
    with pytest.raises(SizeMismatchError, match="img.png"):
        DetrDatasetMapper([T.NoOpTransform()])(_dict(path, [], w=W + 1))
    with pytest.raises(ValueError, match="BGR"):
        DetrDatasetMapper([T.NoOpTransform()], image_format="BGR")


def test_lsj_train_hand_checked(tmp_path):
    path, arr = _image(tmp_path)
    mapper = LSJDatasetMapper(is_train=True, image_size=256, min_scale=1.0, max_scale=1.0, random_flip=False)
    out = mapper(_dict(path, [_box(10, 20, 30, 10)]))
    # scale = min(256/60, 256/100) = 2.56 -> 154 x 256, then padded to 256 x 256 with 114
    assert tuple(out["image"].shape) == (3, 256, 256) and out["valid_size"] == (154, 256)
    assert out["padding_is_image"] is True
    assert (out["image"][:, 154:] == 114).all()
    sx, sy = 256 / 100, 154 / 60  # the resize maps coordinates by the realised size ratios
    expected = torch.tensor([[10 * sx, 20 * sy, 40 * sx, 30 * sy]])
    assert torch.allclose(out["instances"].gt_boxes.tensor, expected, atol=1e-4)
    assert out["instances"].image_size == (256, 256)


def test_lsj_train_random_scales_crop_to_size(tmp_path):
    path, _ = _image(tmp_path, size=(300, 200))
    mapper = LSJDatasetMapper(is_train=True, image_size=128, min_scale=0.1, max_scale=2.0)
    np.random.seed(1)
    for _ in range(10):
        out = mapper(_dict(path, [_box(0, 0, 300, 200), _box(100, 50, 20, 20, cls=1)], w=300, h=200))
        vh, vw = out["valid_size"]
        assert tuple(out["image"].shape) == (3, 128, 128) and vh <= 128 and vw <= 128
        boxes = out["instances"].gt_boxes.tensor
        assert len(boxes) >= 1 and (boxes[:, [0, 2]] <= vw).all() and (boxes[:, [1, 3]] <= vh).all()


def test_lsj_test_mode(tmp_path):
    path, _ = _image(tmp_path)
    out = LSJDatasetMapper(is_train=False, image_size=64)(_dict(path, [_box(10, 20, 30, 10)]))
    assert tuple(out["image"].shape) == (3, 38, 64)  # scale min(64/60, 64/100) = 0.64, no pad
    assert "instances" not in out and out["padding_is_image"] is True
    with pytest.raises(ValueError, match="min_scale"):
        LSJDatasetMapper(min_scale=2.0, max_scale=1.0)
