"""The app layer, imported as ``adla.app``: the ``adla`` command line, the demo and the evaluate command.

The one place that imports every stage (``adla.train``, ``adla.export``, ``adla.runtime``); nothing in the
core or the stages imports it. ``tests/core/test_layers.py`` guards the direction of the imports.
"""
