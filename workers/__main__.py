"""`python -m flashwire.workers` runs the worker, like `flashwire worker`."""

from flashwire.workers.main import run_worker

run_worker()
