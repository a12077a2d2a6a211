"""Flashwire service: newsroom API, reader WebSocket endpoint and static web assets."""
