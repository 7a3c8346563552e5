"""Service: the FastAPI controller users POST sweeps to, and the ``wdgrid`` command-line interface.

It is the only package that may import all the others; nothing imports it.
"""
