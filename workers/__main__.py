"""`python -m workers` runs the worker, like `flashwire worker`."""

from workers.main import run_worker

run_worker()
