"""adla: tiny-object detection in aerial imagery with adaptive dynamic label assignment.

The core package (boxes, anchors, detector, data, metrics, config, CLI). The stages live in
``adla.train``, ``adla.export`` and ``adla.runtime``; nothing here imports them except the CLI, which
imports a stage lazily when its command runs.
"""

__version__ = "0.1.0"
