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
    """The local push services of a test or a bench; with `only`, one platform's alone."""

    webpush: PushService | None
    apns: PushService | None
    fcm: PushService | None
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, folder: Path, *, only: str | None = None, fast: bool = False) -> PushServices:
        """Start them; `fast` asks each to check authentication and headers but not decrypt
        bodies (benches: the stand-in is not what is measured)."""
        extra = ("--fast",) if fast else ()

        def wanted(name: str, *args: str) -> PushService | None:
            if only not in (None, name):
                return None
            return PushService(name, folder / name, *args, *extra).start()

        services = cls(wanted("webpush"), wanted("apns", "--topic", APNS_TOPIC), wanted("fcm"))
        services.env = services._env(folder)
        return services

    def _env(self, folder: Path) -> dict[str, str]:
        env: dict[str, str] = {}
        bundle = folder / "push-ca.pem"
        cas = [s.state_dir / "ca.pem" for s in self.each() if (s.state_dir / "ca.pem").exists()]
        bundle.write_text("".join(ca.read_text() for ca in cas))
        env["FLASHWIRE_PUSH_CA_FILE"] = str(bundle)
        if self.webpush is not None:
            env |= {
                "FLASHWIRE_VAPID_PRIVATE_KEY_FILE": str(ensure_key_file(folder / "vapid.pem")),
                "FLASHWIRE_VAPID_SUBJECT": VAPID_SUBJECT,
                "FLASHWIRE_WEBPUSH_HOSTS": f"127.0.0.1:{self.webpush.port}",
            }
        if self.apns is not None:
            provider = json.loads((self.apns.state_dir / "apns-provider.json").read_text())
            origin = f"https://localhost:{self.apns.port}"
            env |= {
                "FLASHWIRE_APNS_KEY_FILE": str(self.apns.state_dir / "apns-key.p8"),
                "FLASHWIRE_APNS_KEY_ID": provider["key_id"],
                "FLASHWIRE_APNS_TEAM_ID": provider["team_id"],
                "FLASHWIRE_APNS_TOPIC": APNS_TOPIC,
                "FLASHWIRE_APNS_ENDPOINT": origin,
                "FLASHWIRE_APNS_SANDBOX_ENDPOINT": origin,
            }
        if self.fcm is not None:
            scheme = "https" if (self.fcm.state_dir / "ca.pem").exists() else "http"
            env |= {
                "FLASHWIRE_FCM_CREDENTIALS_FILE": str(self.fcm.state_dir / "service-account.json"),
                "FLASHWIRE_FCM_ENDPOINT": f"{scheme}://localhost:{self.fcm.port}",
            }
        return env

    def each(self) -> list[PushService]:
        return [s for s in (self.webpush, self.apns, self.fcm) if s is not None]

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
