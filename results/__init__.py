"""Results: the durable store of sweeps, trials and per-epoch metrics, and the views derived from it.

The store (SQLAlchemy; SQLite by default, PostgreSQL to scale) holds append-only facts; α×λ grids as CSV,
Figure-2 heatmaps, separability metrics and the Optuna export are computed from those facts, never stored instead of
them.
"""
