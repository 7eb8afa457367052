"""What a run is given, checked before any data or compile work: every config field
(``validation``), remote workdirs and data_dirs (``storage``), and the user's own model or
dataset code (``user_code``). The config itself is ``noise_scale.default_config`` (every
field with its default) and ``noise_scale.config_lib`` (``--config=path.py:variant``):
user configs import those two by name, so they stay at the package's root.

Nothing is imported here, so that any module can import one of these without the rest.
"""
