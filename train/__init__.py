"""Training stage of adla, imported as ``adla.train``: label assigners, losses, the training loop."""
