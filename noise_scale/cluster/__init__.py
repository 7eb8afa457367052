"""A run on many processes and machines: starting them together (``distributed``), one run
per workdir (``workdir_lock``), stopping together on a signal (``preemption``) and moving
to a larger slice at a stage boundary (``slices``).

Nothing is imported here, so that any module can import one of these without the rest.
"""
