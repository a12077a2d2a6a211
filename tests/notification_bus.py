"""A desktop's notification server for the browser tests: a private D-Bus session bus
(`dbus-daemon`) and a freedesktop.org notification server on it, where chromium shows its
notifications on Linux when the bus has one (Desktop Notifications Specification 1.2).

Chromium asks the server's `GetCapabilities`, sends each notification with `Notify` (a
replacement names the one it replaces) and takes the server's `ActionInvoked(id, "default")`
signal as the reader's click: it dispatches a real `notificationclick` to the service worker,
the only kind of event that may open or focus a window (W3C Notifications API, "activate a
notification"; Service Workers, `Clients.openWindow()`). A script cannot fake that click, and
the DevTools protocol has no command for it, so the tests click here.

`NotificationBus.start()` starts the daemon on a socket of its own, without service activation
(nothing else is started on it), and `env` is what to give chromium to use it.
"""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from dbus_fast import Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature
from dbus_fast.service import ServiceInterface, method, signal

from flashwire.dev.redis_server import die_with_parent

NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"
# A session bus that only listens on its own socket and starts no service on demand.
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""
# The specification's reason for a notification closed by a call to CloseNotification.
CLOSED_BY_CALL = 3


@dataclass
class Shown:
    """One notification as the server was given it."""

    id: int
    summary: str
    body: str
    actions: list[str]
    replaced: int  # the id it replaced, 0 for none


class NotificationServer(ServiceInterface):
    """org.freedesktop.Notifications: records what is shown, clicks on request."""

    def __init__(self) -> None:
        super().__init__(NAME)
        self.shown: dict[int, Shown] = {}
        self.history: list[Shown] = []
        self.next_id = 1
        self.changed = asyncio.Event()

    @method()
    def GetCapabilities(self) -> Annotated[list[str], DBusSignature("as")]:
        return ["actions", "body"]

    @method()
    def GetServerInformation(self) -> Annotated[list[str], DBusSignature("ssss")]:
        return ["flashwire-tests", "flashwire", "1", "1.2"]

    @method()
    def Notify(
        self,
        app_name: Annotated[str, DBusSignature("s")],
        replaces_id: Annotated[int, DBusSignature("u")],
        app_icon: Annotated[str, DBusSignature("s")],
        summary: Annotated[str, DBusSignature("s")],
        body: Annotated[str, DBusSignature("s")],
        actions: Annotated[list[str], DBusSignature("as")],
        hints: Annotated[dict[str, Variant], DBusSignature("a{sv}")],
        expire_timeout: Annotated[int, DBusSignature("i")],
    ) -> Annotated[int, DBusSignature("u")]:
        notification_id = replaces_id if replaces_id in self.shown else self.next_id
        if notification_id == self.next_id:
            self.next_id += 1
        shown = Shown(notification_id, summary, body, list(actions), replaces_id)
        self.shown[notification_id] = shown
        self.history.append(shown)
        self.changed.set()
        return notification_id

    @method()
    def CloseNotification(
        self, notification_id: Annotated[int, DBusSignature("u")]
    ) -> Annotated[None, DBusSignature("")]:
        if self.shown.pop(notification_id, None) is not None:
            self.NotificationClosed(notification_id, CLOSED_BY_CALL)
        self.changed.set()

    @signal()
    def ActionInvoked(
        self, notification_id: int, action_key: str
    ) -> Annotated[list[Any], DBusSignature("us")]:
        return [notification_id, action_key]

    @signal()
    def NotificationClosed(
        self, notification_id: int, reason: int
    ) -> Annotated[list[Any], DBusSignature("uu")]:
        return [notification_id, reason]

    def click(self, notification_id: int) -> None:
        """The reader clicks the notification's body (the action "default")."""
        self.ActionInvoked(notification_id, "default")


@dataclass
class NotificationBus:
    """A dbus-daemon of its own and the notification server on it."""

    folder: Path
    daemon: asyncio.subprocess.Process | None = None
    bus: MessageBus | None = None
    server: NotificationServer = field(default_factory=NotificationServer)

    @property
    def address(self) -> str:
        return f"unix:path={self.folder / 'bus.sock'}"

    @property
    def env(self) -> dict[str, str]:
        """The environment entry that points chromium at this bus."""
        return {"DBUS_SESSION_BUS_ADDRESS": self.address}

    async def start(self, timeout_s: float = 10.0) -> NotificationBus:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "bus.conf"
        config.write_text(BUS_CONFIG.format(socket=self.folder / "bus.sock"))
        self.daemon = await asyncio.create_subprocess_exec(
            "dbus-daemon",
            f"--config-file={config}",
            "--nofork",
            "--nopidfile",
            "--print-address=1",
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        assert self.daemon.stdout is not None
        async with asyncio.timeout(timeout_s):
            # The daemon prints its address once it listens.
            await self.daemon.stdout.readline()
            self.bus = await MessageBus(bus_address=self.address).connect()
        self.bus.export(PATH, self.server)
        await self.bus.request_name(NAME)
        return self

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Shown]:
        """The history once at least `count` notifications have been sent to the server."""
        async with asyncio.timeout(timeout_s):
            while len(self.server.history) < count:
                self.server.changed.clear()
                await self.server.changed.wait()
        return self.server.history

    async def stop(self) -> None:
        if self.bus is not None:
            self.bus.disconnect()
        if self.daemon is not None and self.daemon.returncode is None:
            self.daemon.terminate()
            await self.daemon.wait()
