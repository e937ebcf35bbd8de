"""Are two exported ONNX graphs the same network up to their weights?

Compared: opset imports; graph inputs and outputs (name, element type, shape); every node in order (op
type, domain, input and output tensor names, attributes, tensor-valued attributes included); initializers
(name, dtype, shape). Ignored: initializer values (the trained weights), metadata_props, doc strings,
producer fields. Two checkpoints of one architecture trained differently (baseline vs ADLA assigner)
must compare identical: the assigner only exists in training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_REPORTED = 20


def _load(model: Any) -> Any:
    import onnx

    if isinstance(model, (str, Path)):
        return onnx.load(str(model), load_external_data=False)
    return model


def _shape(value_info: Any) -> tuple:
    t = value_info.type.tensor_type
    dims = tuple(d.dim_param if d.HasField("dim_param") else d.dim_value for d in t.shape.dim)
    return value_info.name, t.elem_type, dims


def _attr(attr: Any) -> Any:
    import onnx

    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, onnx.TensorProto):
        return ("tensor", value.data_type, tuple(value.dims), onnx.numpy_helper.to_array(value).tobytes())
    if isinstance(value, onnx.GraphProto):
        return ("graph", value.SerializeToString())
    if isinstance(value, bytes):
        return value
    if isinstance(value, list):
        return tuple(v.SerializeToString() if hasattr(v, "SerializeToString") else v for v in value)
    return value


def _node_sig(node: Any) -> tuple:
    return (node.op_type, node.domain, tuple(node.input), tuple(node.output),
            tuple(sorted((a.name, _attr(a)) for a in node.attribute)))


def graphs_identical(a_onnx: Any, b_onnx: Any) -> tuple[bool, list[str]]:
    """(identical, differences) of two ONNX models (paths or ModelProtos), ignoring weight values and
    metadata. ``differences`` is empty when identical, else human-readable lines (at most 20 shown)."""
    a, b = _load(a_onnx), _load(b_onnx)
    diffs: list[str] = []
    ops_a = sorted((o.domain, o.version) for o in a.opset_import)
    ops_b = sorted((o.domain, o.version) for o in b.opset_import)
    if ops_a != ops_b:
        diffs.append(f"opset imports differ: {ops_a} vs {ops_b}")
    ga, gb = a.graph, b.graph
    for kind, xs, ys in (("input", ga.input, gb.input), ("output", ga.output, gb.output)):
        sa, sb = [_shape(v) for v in xs], [_shape(v) for v in ys]
        if sa != sb:
            diffs.append(f"graph {kind}s differ: {sa} vs {sb}")
    if len(ga.node) != len(gb.node):
        diffs.append(f"node count differs: {len(ga.node)} vs {len(gb.node)}")
    for i, (na, nb) in enumerate(zip(ga.node, gb.node)):
        if _node_sig(na) != _node_sig(nb):
            diffs.append(f"node {i} differs: {na.op_type}({', '.join(na.input)}) vs {nb.op_type}({', '.join(nb.input)})"
                         if na.op_type != nb.op_type or tuple(na.input) != tuple(nb.input)
                         else f"node {i} ({na.op_type} {na.name}) differs in outputs or attributes")
    inits_a = {t.name: (t.data_type, tuple(t.dims)) for t in ga.initializer}
    inits_b = {t.name: (t.data_type, tuple(t.dims)) for t in gb.initializer}
    for name in sorted(inits_a.keys() - inits_b.keys()):
        diffs.append(f"initializer {name} only in the first model {inits_a[name]}")
    for name in sorted(inits_b.keys() - inits_a.keys()):
        diffs.append(f"initializer {name} only in the second model {inits_b[name]}")
    for name in sorted(inits_a.keys() & inits_b.keys()):
        if inits_a[name] != inits_b[name]:
            diffs.append(f"initializer {name}: dtype/shape {inits_a[name]} vs {inits_b[name]}")
    if len(diffs) > MAX_REPORTED:
        diffs = diffs[:MAX_REPORTED] + [f"... and {len(diffs) - MAX_REPORTED} more differences"]
    return not diffs, diffs
