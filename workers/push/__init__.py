"""Pushes to closed apps and browsers: registrations' targets, alerts, and one sender per platform.

docs/push.md is the user's side of it; `base` says what every sender implements.
"""
