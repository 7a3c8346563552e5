"""Workers: what runs on a Ray worker — the paper's four optimizers (SGD, SGDW, Adam, AdamW), its schedules, the data
sets and models, the one training loop (``workers.train``; ``workers.bundle`` batches it), the context a trainer
plugin's own loop runs in (``workers.trainer``) and the Tune trainable.

``workers.optimizers`` implements Algorithms 1 and 2 of Loshchilov & Hutter (ICLR 2019) exactly, with the L2 and the
decoupled variants side by side; ``workers.schedules`` gives the schedule multiplier η_t per optimizer step. It imports
``sweeps`` only (no database, no HTTP: ``pyproject.toml``'s import-linter contracts check it); the training entry
point runs without Ray, FastAPI or a database.
"""
