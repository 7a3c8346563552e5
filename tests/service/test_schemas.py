"""What GET /sweeps/{id} computes from the store's records: progress and an ETA that reused cells do not skew."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from results import SqlStorage
from results._records import TRIAL_STATUSES
from service.schemas import SweepPublic
from sweeps import expand
from tests.factories import make_spec


def test_the_eta_rates_only_the_cells_trained_since_the_start(tmp_path: Path):
    with SqlStorage(f"sqlite:///{tmp_path / 'wdgrid.db'}") as store:
        sweep = store.create_sweep(expand(make_spec()))  # 18 cells
        sweep = store.set_sweep_status(sweep.id, "running")
        assert sweep.started_at is not None
    counts = dict.fromkeys(TRIAL_STATUSES, 0) | {"completed": 12, "running": 2, "pending": 4}
    now = sweep.started_at + timedelta(seconds=60)
    # 10 of the 12 completed cells were reused before the start; 2 trained in 60 s: 6 left take 180 s.
    public = SweepPublic.of(sweep, counts, now, trained=2)
    assert public.progress == pytest.approx(12 / 18) and public.elapsed_s == 60.0
    assert public.eta_s == pytest.approx(180.0)
    assert SweepPublic.of(sweep, counts, now).eta_s == pytest.approx(30.0)  # what counting reused cells would say
    assert SweepPublic.of(sweep, counts, now, trained=0).eta_s is None  # no rate yet
