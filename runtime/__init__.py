"""Fast tiled inference on large aerial scenes: windowed readers, tiling, backends (torch, onnxruntime,
TensorRT), cross-tile merging and writers (COCO JSON, GeoJSON, preview pictures)."""
