"""``python -m noise_scale.launch``: see ``noise_scale.launch.command``."""

from noise_scale import _python

_python.require_supported()  # before absl, JAX and the pinned packages are imported

from noise_scale import cli
from noise_scale.launch import command

if __name__ == "__main__":
    cli.run(command.main, variant=False)
