"""The senders of the platforms this deployment pushes to, built once per worker process from
the settings (docs/configuration.md, "Pushes"): a platform is on when its credentials are set.

Each sender's module is imported only when its platform is on: a deployment without FCM never
loads google-auth, one without Web Push never loads pywebpush and aiohttp."""

from __future__ import annotations

import logging
from pathlib import Path

from flashwire.core.settings import Settings
from flashwire.core.vapid import subject_warning
from flashwire.workers.push.base import PushSender

log = logging.getLogger(__name__)


def build_senders(settings: Settings) -> dict[str, PushSender]:
    """One sender per configured platform, keyed by platform name."""
    senders: dict[str, PushSender] = {}
    ca_file = settings.push_ca_file or None
    connections = settings.push_concurrency
    if settings.vapid_private_key_file:
        from flashwire.workers.push.webpush import WebPushSender

        warning = subject_warning(settings.vapid_subject)
        if warning:
            log.warning("%s", warning)
        senders["webpush"] = WebPushSender(
            vapid_private_key_pem=Path(settings.vapid_private_key_file).read_text(),
            subject=settings.vapid_subject,
            timeout_s=settings.push_timeout_s,
            max_connections=connections,
        )
    if settings.fcm_credentials_file:
        from flashwire.workers.push.fcm import FcmSender

        senders["fcm"] = FcmSender(
            credentials_file=settings.fcm_credentials_file,
            endpoint=settings.fcm_endpoint,
            timeout_s=settings.push_timeout_s,
            ca_file=ca_file,
            max_connections=connections,
        )
    if settings.apns_key_file:
        from flashwire.workers.push.apns import ApnsSender

        senders["apns"] = ApnsSender(
            key_pem=Path(settings.apns_key_file).read_text(),
            key_id=settings.apns_key_id,
            team_id=settings.apns_team_id,
            topic=settings.apns_topic,
            endpoint=settings.apns_endpoint,
            sandbox_endpoint=settings.apns_sandbox_endpoint,
            timeout_s=settings.push_timeout_s,
            ca_file=ca_file,
            max_connections=connections,
        )
    return senders
