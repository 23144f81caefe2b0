"""Triton model repository: layout, and the written config.pbtxt parsed back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.onnx_export import OnnxExportConfig, export_onnx
from export.triton import TritonConfig, parse_pbtxt, write_triton_repository
from multiroi.backends.tensorrt_backend import EngineMetadata, sha256_file
from multiroi.model import ModelConfig, MultiRoINet


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = MultiRoINet(ModelConfig(backbone="test_resnet", num_rois=3, hidden=32, pe_levels=4))
    out = tmp_path_factory.mktemp("triton") / "m.onnx"
    return export_onnx(
        net.eval(), out, OnnxExportConfig(exporter="torchscript", verify=False)
    ).path


def test_parse_pbtxt_reads_protobuf_text_format():
    text = 'name: "a" # comment\nmax_batch_size: 8\ninput [ { name: "x" dims: [ 1, 2 ] } ]\n' \
           "instance_group [ { count: 2 kind: KIND_GPU } ]\nf: 0.5"  # fmt: skip
    got = parse_pbtxt(text)
    assert got == {"name": "a", "max_batch_size": 8, "input": [{"name": "x", "dims": [1, 2]}],
                   "instance_group": [{"count": 2, "kind": "KIND_GPU"}], "f": 0.5}  # fmt: skip


def test_onnx_repository_config(onnx_file: Path, tmp_path: Path):
    cfg = TritonConfig(max_batch_size=12, preferred_batch_sizes=(4, 8, 16), instances=2)
    model_dir = write_triton_repository(onnx_file, tmp_path / "repo", cfg)
    assert model_dir.name == "multiroi_r3"
    assert (model_dir / "1" / "model.onnx").read_bytes() == onnx_file.read_bytes()
    conf = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    assert conf["name"] == "multiroi_r3" and conf["platform"] == "onnxruntime_onnx"
    assert conf["max_batch_size"] == 12
    inputs = {t["name"]: t for t in conf["input"]}
    assert inputs["crops"]["dims"] == [3, 3, 256, 192] and inputs["box_info"]["dims"] == [3, 3]
    assert all(t["data_type"] == "TYPE_FP32" for t in conf["input"] + conf["output"])
    outputs = {t["name"]: t["dims"] for t in conf["output"]}
    assert outputs == {"rotmat": [24, 3, 3], "betas": [10], "cam_local": [3, 3]}
    assert conf["dynamic_batching"]["preferred_batch_size"] == [4, 8]  # 16 > max batch: dropped
    assert conf["dynamic_batching"]["max_queue_delay_microseconds"] == 2000
    assert conf["instance_group"] == [{"count": 2, "kind": "KIND_GPU"}]
    params = {p["key"]: json.loads(p["value"]["string_value"]) for p in conf["parameters"]}
    assert params["multiroi.num_rois"] == 3 and params["multiroi.backbone"] == "test_resnet"
    assert params["multiroi.std"] == [0.229, 0.224, 0.225]


def _fake_engine(path: Path, persons_max: int) -> Path:
    path.write_bytes(b"not a real engine, but its checksum is recorded")
    EngineMetadata(gpu_name="NVIDIA H100", compute_capability="9.0", tensorrt_version="10.9.0",
                   precision="fp16", num_rois=5, persons_min=1, persons_opt=4,
                   persons_max=persons_max, sha256=sha256_file(path),
                   onnx={"num_rois": 5, "output_names": ["rotmat", "betas", "cam_local"]},
                   ).write(path)  # fmt: skip
    return path


def test_engine_repository_config(tmp_path: Path):
    engine = _fake_engine(tmp_path / "m.engine", persons_max=8)
    model_dir = write_triton_repository(engine, tmp_path / "repo", TritonConfig(max_batch_size=8))
    conf = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    assert conf["platform"] == "tensorrt_plan" and conf["max_batch_size"] == 8
    assert (model_dir / "1" / "model.plan").is_file()
    assert (model_dir / "1" / "model.plan.json").is_file()
    assert {t["name"]: t["dims"] for t in conf["output"]}["cam_local"] == [5, 3]
    with pytest.raises(ValueError, match="exceeds the engine's persons_max 8"):
        write_triton_repository(engine, tmp_path / "repo2", TritonConfig(max_batch_size=16))
