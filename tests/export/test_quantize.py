"""INT8 (QDQ) and FP16 ONNX export: what the files hold, how close they run to FP32, the CPU form of the
INT8 graph, the refusals, and the "ADLA adds nothing" comparison of two QDQ graphs."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from PIL import Image

from adla.data.synth import synth_image
from adla.errors import AdlaError
from adla.export.commands import register
from adla.export.compare import graphs_identical
from adla.export.onnx_export import export_onnx, read_metadata
from adla.export.quantize import calibration_tiles, count_ops, cpu_int8_graph, precision_of, quantize_int8

SIZE = 64


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adla")
    register(parser.add_subparsers(dest="command"))
    return parser


def _export(*argv: str) -> int:
    args = _parser().parse_args(["export", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(0)
    for i in range(4):
        img, _, _ = synth_image(96, 128, rng)  # two tiles of 64 across, one and a half down
        Image.fromarray(img).save(folder / f"scene{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def fp32_and_int8(tiny_ckpt, calib_dir, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("q")
    fp32 = folder / "m.onnx"
    export_onnx(tiny_ckpt, fp32, input_size=(SIZE, SIZE), check=False)
    int8 = folder / "m.int8.onnx"
    quantize_int8(fp32, int8, calib_dir, max_tiles=8, batch=2, method="minmax")
    return fp32, int8


def _tiles(calib_dir: Path, n: int = 4) -> np.ndarray:
    return calibration_tiles(sorted(calib_dir.glob("*.png")), (SIZE, SIZE), n)


def test_calibration_tiles_are_cut_on_the_grid_and_padded(calib_dir):
    tiles = calibration_tiles(sorted(calib_dir.glob("*.png"))[:1], (SIZE, SIZE), 8)
    # a 96 x 128 image: rows at y 0 and 32 (the last flush with the edge), columns at x 0 and 64
    assert tiles.shape == (4, 3, SIZE, SIZE) and tiles.dtype == np.float32
    img = np.asarray(Image.open(min(calib_dir.glob("*.png"))).convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(tiles[3], img[:, 32:96, 64:128].astype(np.float32))
    big = calibration_tiles(sorted(calib_dir.glob("*.png"))[:1], (128, 160), 2)
    assert big.shape == (1, 3, 128, 160) and not big[:, :, 96:].any() and not big[:, :, :, 128:].any()


def test_calibration_reader_hands_out_one_batch_per_range():
    from adla.export.quantize import _reader

    tiles = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1)
    reader = _reader(tiles, 2)
    assert len(reader) == 3
    assert [b["images"].ravel().tolist() for b in reader] == [[0, 1], [2, 3], [4]]
    reader.set_range(1, 2)
    assert [b["images"].ravel().tolist() for b in reader] == [[2, 3]]


def test_export_int8_command_writes_a_qdq_model(tiny_ckpt, calib_dir, tmp_path, capsys):
    ckpt = tmp_path / "det.pt"
    ckpt.write_bytes(tiny_ckpt.read_bytes())
    assert _export(str(ckpt), "--int8", "--calib-images", str(calib_dir), "--calib-max", "6", "--calib-batch", "2",
                   "--calib-method", "entropy", "--input-size", str(SIZE), str(SIZE)) == 0
    out = tmp_path / "det.int8.onnx"
    assert out.is_file() and not (tmp_path / "det.onnx").exists()  # no FP32 file left beside it
    model = onnx.load(str(out))
    assert count_ops(model, ("QuantizeLinear",)) > 0 and count_ops(model, ("DequantizeLinear",)) > 0
    meta = read_metadata(out)
    assert meta["precision"] == "int8" and meta["variant"] == "raw" and meta["input_size"] == [SIZE, SIZE]
    cal = meta["quantization"]["calibration"]
    assert cal == {"folder": str(calib_dir.resolve()), "images": 4, "tiles": 6, "tile_size": [SIZE, SIZE],
                   "batch": 2, "method": "entropy"}
    assert meta["quantization"]["format"] == "QDQ"
    text = capsys.readouterr().out
    assert "INT8" in text and "QuantizeLinear/DequantizeLinear" in text and str(calib_dir.resolve()) in text


def test_int8_weights_are_per_channel_symmetric_and_activations_zero_point_0(fp32_and_int8):
    _, int8 = fp32_and_int8
    model = onnx.load(str(int8))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                 and inits[n.input[0]].ndim == 4]
    assert weight_dq
    for n in weight_dq:
        w, scale, zp = inits[n.input[0]], inits[n.input[1]], inits[n.input[2]]
        assert w.dtype == np.int8 and scale.shape == (w.shape[0],) and not zp.any()  # one scale per output channel
    act_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert act_q and all(inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any() for n in act_q)


def test_int8_outputs_stay_close_to_fp32(fp32_and_int8, calib_dir):
    fp32, int8 = fp32_and_int8
    x = _tiles(calib_dir)
    ref = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    got = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    cpu, stats = cpu_int8_graph(onnx.load(str(int8)))
    fast = ort.InferenceSession(cpu.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    sig = lambda a: 1 / (1 + np.exp(-a))
    for out in (got, fast):
        assert not np.array_equal(out[0], ref[0])  # it is quantized ...
        assert np.abs(sig(out[0]) - sig(ref[0])).max() < 0.1  # ... and still the same detector
        assert np.abs(out[1] - ref[1]).mean() < 0.05
    assert stats["relus_folded"] > 0 and stats["zero_points_to_uint8"] > 0


def test_cpu_form_has_no_int8_activations_left(fp32_and_int8):
    _, int8 = fp32_and_int8
    src = onnx.load(str(int8))
    cpu, stats = cpu_int8_graph(src)
    inits = {t.name: numpy_helper.to_array(t) for t in cpu.graph.initializer}
    act = [n for n in cpu.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert act and all(inits[n.input[2]].dtype == np.uint8 for n in act)
    relus = lambda m: sum(n.op_type == "Relu" for n in m.graph.node)
    assert relus(cpu) == relus(src) - stats["relus_folded"]
    assert count_ops(src) == count_ops(onnx.load(str(int8)))  # the input model is left as it was


def test_export_fp16_keeps_float32_io(tiny_ckpt, calib_dir, fp32_and_int8, tmp_path):
    fp32, _ = fp32_and_int8
    out = tmp_path / "m.fp16.onnx"
    assert _export(str(fp32), "--fp16", "--out", str(out)) == 0
    model = onnx.load(str(out))
    assert precision_of(model) == "fp16" and read_metadata(out)["precision"] == "fp16"
    f32 = onnx.TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [f32]
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {f32}
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    x = _tiles(calib_dir)
    ref = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    assert got[0].dtype == np.float32 and np.abs(got[0] - ref[0]).max() < 0.05


def test_int8_and_fp16_refusals(tiny_ckpt, calib_dir, fp32_and_int8, tmp_path):
    fp32, int8 = fp32_and_int8
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures")
    few = tmp_path / "few"
    few.mkdir()
    (few / "a.png").write_bytes((calib_dir / "scene0.png").read_bytes())
    out = str(tmp_path / "x.int8.onnx")
    cases = [
        ([str(fp32), "--int8", "--calib-images", str(empty)], "no calibration images"),
        ([str(fp32), "--int8", "--calib-images", str(tmp_path / "missing")], "calibration folder not found"),
        ([str(fp32), "--int8", "--calib-images", str(few), "--calib-batch", "4"],
         "only 1 calibration image.*fewer than the calibration batch of 4.*--calib-batch 1"),
        ([str(int8), "--int8", "--calib-images", str(calib_dir)], "already quantized"),
        ([str(int8), "--fp16"], "already quantized"),
        ([str(fp32), "--int8", "--fp16", "--calib-images", str(calib_dir)], "exclude each other"),
        ([str(fp32), "--int8"], "needs --calib-images"),
        ([str(fp32)], "already an ONNX model: add --int8"),
        ([str(tiny_ckpt), "--int8", "--nms", "--calib-images", str(calib_dir)], "drop --nms"),
    ]
    for argv, message in cases:
        with pytest.raises(AdlaError, match=message) as info:
            _export(*argv, "--out", out, "--input-size", str(SIZE), str(SIZE))
        assert "\n" not in str(info.value)
    assert not Path(out).exists()


def test_the_fp32_model_is_never_overwritten(fp32_and_int8, calib_dir, tmp_path):
    fp32, _ = fp32_and_int8
    target = tmp_path / "target.onnx"
    target.write_bytes(fp32.read_bytes())
    before = target.read_bytes()
    with pytest.raises(AdlaError, match="is an FP32 model and would be overwritten"):
        _export(str(fp32), "--int8", "--calib-images", str(calib_dir), "--calib-batch", "2", "--out", str(target))
    assert target.read_bytes() == before


def test_qdq_graphs_of_two_assigners_are_identical_up_to_weights_and_scales(tmp_path, calib_dir):
    from helpers import make_checkpoint

    paths = []
    for name, seed in (("maxiou", 0), ("adla", 1)):
        ckpt = make_checkpoint(tmp_path / f"{name}.pt", [f"assigner.name={name}"], seed=seed)
        fp32 = tmp_path / f"{name}.onnx"
        export_onnx(ckpt, fp32, input_size=(SIZE, SIZE), check=False)
        paths.append(tmp_path / f"{name}.int8.onnx")
        quantize_int8(fp32, paths[-1], calib_dir, max_tiles=4, batch=2, method="minmax")
    a, b = (onnx.load(str(p)) for p in paths)
    same, diffs = graphs_identical(a, b)
    assert same, diffs
    assert [read_metadata(p)["assigner"]["name"] for p in paths] == ["maxiou", "adla"]
    scales = lambda m: {t.name: numpy_helper.to_array(t) for t in m.graph.initializer if t.name.endswith("_scale")}
    sa, sb = scales(a), scales(b)
    assert sa.keys() == sb.keys() and any(not np.array_equal(sa[k], sb[k]) for k in sa)  # other weights, other scales


def test_infer_runs_the_int8_model_and_says_so(fp32_and_int8, calib_dir, capsys):
    from adla.runtime.backends import load_backend, read_model_meta
    from adla.runtime.commands import _print_model

    _, int8 = fp32_and_int8
    backend = load_backend(int8, "cpu")
    assert backend.meta.precision == "int8" and backend.cpu_rewrite["relus_folded"] > 0
    cls_logits, box_deltas = backend(_tiles(calib_dir, 2))
    assert cls_logits.shape[0] == 2 and box_deltas.shape[-1] == 4
    note = read_model_meta(int8).precision_note
    assert note.startswith("INT8") and str(calib_dir.resolve()) in note and "minmax" in note
    _print_model(str(int8))
    assert "m.int8.onnx: INT8" in capsys.readouterr().err


def test_bench_model_compares_the_qdq_graphs_and_times_int8(tmp_path, calib_dir):
    from helpers import make_checkpoint

    from adla.export.profile import compare_models, format_model_table

    base = make_checkpoint(tmp_path / "base.pt", ["assigner.name=maxiou"], seed=0)
    adla = make_checkpoint(tmp_path / "adla.pt", ["assigner.name=adla"], seed=1)
    res = compare_models([base, adla], input_size=(SIZE, SIZE), runs=2, warmup=1, backends=("onnxruntime",),
                         calib_images=calib_dir)
    (cmp,) = res["comparison"]
    assert cmp["qdq_graphs_identical"] and cmp["graphs_identical"], cmp["graph_differences"]
    assert set(cmp["latency_ratio"]) == {"onnxruntime", "onnxruntime-int8"}
    assert "(FP32 and INT8 QDQ)" in res["verdict"] and "onnxruntime-int8" in format_model_table(res)


def test_qdq_graphs_of_other_head_widths_differ(tmp_path, calib_dir):
    from helpers import make_checkpoint

    paths = []
    for name, extra in (("a", []), ("w", ["model.head_channels=64"])):
        fp32 = tmp_path / f"{name}.onnx"
        export_onnx(make_checkpoint(tmp_path / f"{name}.pt", extra), fp32, input_size=(SIZE, SIZE), check=False)
        paths.append(tmp_path / f"{name}.int8.onnx")
        quantize_int8(fp32, paths[-1], calib_dir, max_tiles=2, batch=2, method="minmax")
    same, diffs = graphs_identical(*paths)
    assert not same and diffs


def _qdq_act_graph(op: str) -> onnx.ModelProto:
    """x -> Q(s 0.1, int8 0) -> DQ -> Relu | Clip(0, 6) -> Q(s 6/127, int8 0) -> DQ -> y, as quantize_static
    writes symmetric activations around a ReLU."""
    from onnx import TensorProto, helper

    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s1"),
             numpy_helper.from_array(np.array(0, np.int8), "z1"),
             numpy_helper.from_array(np.array(6 / 127, np.float32), "s2"),
             numpy_helper.from_array(np.array(0, np.int8), "z2"),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    act = helper.make_node("Relu", ["d1"], ["r"]) if op == "Relu" else helper.make_node("Clip", ["d1", "lo", "hi"], ["r"])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s1", "z1"], ["q1"]),
             helper.make_node("DequantizeLinear", ["q1", "s1", "z1"], ["d1"]), act,
             helper.make_node("QuantizeLinear", ["r", "s2", "z2"], ["q2"]),
             helper.make_node("DequantizeLinear", ["q2", "s2", "z2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [7])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op", ["Relu", "Clip"])
def test_cpu_form_folds_relu_and_relu6_into_the_quantizer(op):
    x = np.array([-3.0, -0.04, 0.0, 0.5, 2.0, 5.9, 9.0], np.float32)
    src = _qdq_act_graph(op)
    cpu, stats = cpu_int8_graph(src)
    assert stats["relus_folded"] == 1 and [n.op_type for n in cpu.graph.node] == ["QuantizeLinear", "DequantizeLinear"]
    y = ort.InferenceSession(cpu.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ref = ort.InferenceSession(src.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    # negatives clamp to 0 and everything up to 6 is kept within a quantization step of either graph
    assert y[:3].tolist() == [0.0, 0.0, 0.0]
    assert np.abs(y[3:6] - ref[3:6]).max() <= 6 / 127
    top = 6.0 if op == "Clip" else 255 * 6 / 127  # ReLU6 still clips at 6; a ReLU saturates at 255 steps
    assert y[6] == pytest.approx(min(9.0, top), abs=6 / 127)


def test_float_outputs_keeps_the_head_output_convs_float(fp32_and_int8, calib_dir, tmp_path):
    from adla.export.quantize import output_convs

    fp32, int8 = fp32_and_int8
    heads = output_convs(onnx.load(str(fp32)))
    assert len(heads) == 6  # cls and box convs of P3, P4, P5
    out = tmp_path / "fh.int8.onnx"
    quantize_int8(fp32, out, calib_dir, max_tiles=4, batch=2, method="minmax", float_outputs=True)
    model = onnx.load(str(out))
    inits = {t.name for t in model.graph.initializer}
    prod = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.name in heads:  # the weight comes straight from a float initializer, no DequantizeLinear
            assert node.input[1] in inits and node.input[1] not in prod
    assert 0 < count_ops(model) < count_ops(onnx.load(str(int8)))
    assert read_metadata(out)["quantization"]["float_outputs"] is True
