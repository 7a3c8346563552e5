"""Sweep specifications: what an (α, λ) grid search is.

A sweep names a data set and a model from the registries, a schedule, the seeds, and one (α, λ) grid per optimizer;
this package validates it, gives it a canonical form and fingerprint, and expands it into cells
``(optimizer, α, λ, seed)`` and bundles of cells that train together. Presets reproduce the paper's figures.
It imports nothing from ``workers``, ``results`` or ``service``: data flows from here outwards.
"""
