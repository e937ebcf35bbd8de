"""Export the unchanged detector: ONNX (raw heads or with decode + NMS), TensorRT engines, parity checks,
and parameter/FLOP/latency profiling of trained checkpoints."""
