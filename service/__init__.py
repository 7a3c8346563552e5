"""Service: the controller — the FastAPI app (``main``, ``routes``, ``deps``, ``schemas``, ``settings``), the queue
(``scheduler``), the fan-out that runs a sweep on Ray (``fanout``: the sweep's driver, the only writer of its results)
and the ``wdgrid`` command line (``cli``). It is the only package that may import all the others; nothing imports it.
"""
