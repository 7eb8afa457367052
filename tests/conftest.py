"""Test setup: eight CPU devices, so data parallelism is exercised without an accelerator.

XLA_FLAGS must be set before JAX initialises its backend, hence at import time here.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
