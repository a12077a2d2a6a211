"""The three local push services and the settings that point a worker and a service at them.

`PushServices.start(tmp_path)` starts the Web Push, APNs and FCM stand-ins
(tests/push_services/), and `env` holds what `flashwire worker` / `flashwire serve` need to push
to them: the VAPID key and subject, the allowed Web Push host, the APNs key (the one the local
APNs made), the FCM service account (the one the local FCM made, whose token URI is its own
OAuth2 endpoint), and one CA bundle trusting both TLS services.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flashwire.core.vapid import ensure_key_file
from tests.push_services import PushService

APNS_TOPIC = "net.example.news"
VAPID_SUBJECT = "mailto:alerts@newsroom.example"


@dataclass
class PushServices:
    webpush: PushService
    apns: PushService
    fcm: PushService
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, folder: Path) -> PushServices:
        webpush = PushService("webpush", folder / "webpush").start()
        apns = PushService("apns", folder / "apns", "--topic", APNS_TOPIC).start()
        fcm = PushService("fcm", folder / "fcm").start()
        services = cls(webpush, apns, fcm)
        services.env = services._env(folder)
        return services

    def _env(self, folder: Path) -> dict[str, str]:
        provider = json.loads((self.apns.state_dir / "apns-provider.json").read_text())
        bundle = folder / "push-ca.pem"
        bundle.write_text(
            "".join(
                p.read_text()
                for p in (self.apns.state_dir / "ca.pem", self.fcm.state_dir / "ca.pem")
                if p.exists()
            )
        )
        apns_origin = f"https://localhost:{self.apns.port}"
        return {
            "FLASHWIRE_VAPID_PRIVATE_KEY_FILE": str(ensure_key_file(folder / "vapid.pem")),
            "FLASHWIRE_VAPID_SUBJECT": VAPID_SUBJECT,
            "FLASHWIRE_WEBPUSH_HOSTS": f"127.0.0.1:{self.webpush.port}",
            "FLASHWIRE_APNS_KEY_FILE": str(self.apns.state_dir / "apns-key.p8"),
            "FLASHWIRE_APNS_KEY_ID": provider["key_id"],
            "FLASHWIRE_APNS_TEAM_ID": provider["team_id"],
            "FLASHWIRE_APNS_TOPIC": APNS_TOPIC,
            "FLASHWIRE_APNS_ENDPOINT": apns_origin,
            "FLASHWIRE_APNS_SANDBOX_ENDPOINT": apns_origin,
            "FLASHWIRE_FCM_CREDENTIALS_FILE": str(self.fcm.state_dir / "service-account.json"),
            "FLASHWIRE_FCM_ENDPOINT": self.fcm_origin,
            "FLASHWIRE_PUSH_CA_FILE": str(bundle),
        }

    @property
    def fcm_origin(self) -> str:
        scheme = "https" if (self.fcm.state_dir / "ca.pem").exists() else "http"
        return f"{scheme}://localhost:{self.fcm.port}"

    def each(self) -> list[PushService]:
        return [self.webpush, self.apns, self.fcm]

    def stop(self) -> None:
        for service in self.each():
            service.stop()


def registration_body(platform: str, target: dict[str, Any], **choices: Any) -> dict[str, Any]:
    """The registration request for a target a local service made (its control API's shape)."""
    body: dict[str, Any] = {"platform": platform, "editions": ["en"], **choices}
    if platform == "webpush":
        body["subscription"] = {"endpoint": target["endpoint"], "keys": target["keys"]}
    else:
        body["token"] = target["token"]
    return body


def token_of(platform: str, target: dict[str, Any]) -> str:
    """How the service's `received` names a target: the endpoint's subscription id or the token."""
    return str(target["token"] if platform != "webpush" else target.get("token") or target["endpoint"])
