"""Flashwire: real-time breaking-news push.

One import package, laid out as the architecture (docs/architecture.md):

- `flashwire.core`: what every part stands on (settings, Redis keys, clock, the line and its
  validation, epochs); imports neither the service nor the workers.
- `flashwire.service`: the Starlette application (newsroom API, reader WebSocket and SSE, feeds).
- `flashwire.workers`: the fan-out worker (desk consumer, arq jobs).
- `flashwire.web`: the desk page, the widget and the reader page (static files).
- `flashwire.client`: the Python ticker client.
- `flashwire.cli` and `flashwire.dev`: the command line and the embedded development stack.

In the repository, service/, workers/ and web/ sit at the top and are linked into flashwire/.
"""

__version__ = "0.1.0"
