"""Flashwire worker: fans desk actions out to the edition tickers, and runs scheduled jobs."""
