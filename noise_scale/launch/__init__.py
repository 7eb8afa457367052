"""``python -m noise_scale.launch``: the job that runs a config slice by slice on a cluster
engine. ``plan``: the legs (consecutive stages on one slice); ``command``: the command and
SLURM's batch script; ``gcloud``, ``xpk``, ``skypilot``: the other engines' drivers.

Nothing is imported here: ``__main__`` checks the Python version before anything else.
"""
