"""Test setup: eight CPU devices, so data parallelism is exercised without an accelerator.

XLA_FLAGS must be set before JAX initialises its backend, hence at import time here.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def private_compile_cache(tmp_path_factory):
    """The runs' compile cache (``$XDG_CACHE_HOME/noise_scale/compilation_cache``) in this
    session's temporary directory, not the user's ~/.cache; subprocesses inherit it."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
