"""adla: tiny-object detection in aerial imagery with adaptive dynamic label assignment.

The core package (boxes, anchors, detector, data, metrics, config). The stages live in
``adla.train``, ``adla.export`` and ``adla.runtime``; nothing here imports them, not even lazily. The
command line, the demo and the evaluate command are the app layer, ``adla.app``, above all of them
(``tests/core/test_layers.py`` guards the direction).
"""

__version__ = "0.1.0"
