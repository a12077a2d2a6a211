"""Partner webhooks in the worker: dispatch from the tickers, ordered delivery by arq, signing.

docs/webhooks.md is the partner's side of it; `part` wires the pieces into the worker process.
"""
