"""``workers.trainable`` as the driver sees it: handing ``train_chunk`` to Tune imports no torch (that is the
worker's to pay), so a sweep's driver starts seconds sooner. Training through it is tested in
``tests/service/test_fanout.py``."""

from __future__ import annotations

import subprocess
import sys


def test_the_driver_gets_the_trainable_without_importing_torch():
    probe = (
        "import sys; import service.fanout, service._result_writer; "
        "from workers.trainable import CELLS_FILE, train_chunk; print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
