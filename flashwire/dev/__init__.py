"""The embedded development stack: a private Valkey or Redis server, the worker and the service."""
