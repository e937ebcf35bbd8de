"""Data: the COCO-json dataset and batching, format converters (DOTA, YOLO, YOLO-OBB, Airbus CSV),
and a synthetic tiny-object scene generator for tests and the demo."""
