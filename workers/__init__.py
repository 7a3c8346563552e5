"""Workers: PyTorch training with the paper's four optimizers (SGD, SGDW, Adam, AdamW) and its schedules.

``workers.optimizers`` implements Algorithms 1 and 2 of Loshchilov & Hutter (ICLR 2019) exactly, with the L2 and the
decoupled variants side by side; ``workers.schedules`` gives the schedule multiplier η_t per optimizer step. Nothing
here imports ``service``; the training entry point runs without Ray, FastAPI or a database.
"""
