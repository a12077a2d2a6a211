"""Every Redis key name Flashwire uses, in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix, so several deployments can share a Redis.

    The layout runs on Redis Cluster (docs/architecture.md, "Redis key layout"): keys that one
    Lua script, one MGET or one multi-stream read touches together carry one hash tag, so they
    hash to one slot (a Cluster refuses a command over several slots with CROSSSLOT; PITFALLS 3.9):

    - `{fw}` (`tag`): the desk, its applied cursor, the tickers, lines, histories, the live /
      scheduled / killed / expiry sets, the audit stream, the epoch, idempotency records, worker
      heartbeats, the push batches running and the webhook endpoints and logs. The desk apply
      step is one atomic script over all of these, so they cannot be spread over shards;
    - `{fw:push}` (`push_tag`): push registrations, their target sets and per-client sets
      (written together when a device registers);
    - no tag: families touched one key at a time (reach, readers, per-line push bookkeeping,
      tokens, arq queues), which a Cluster spreads over every shard; the rate-limit counters,
      which `limits` tags itself.
    """

    prefix: str = "fw"

    @property
    def tag(self) -> str:
        """The hash tag of everything the desk apply step and the readers' reads touch together."""
        return "{" + self.prefix + "}"

    @property
    def push_tag(self) -> str:
        """The hash tag of the push registry (a registration, its target sets and its client set)."""
        return "{" + self.prefix + ":push}"

    @property
    def desk(self) -> str:
        """The desk stream: every accepted editorial action, in order."""
        return f"{self.tag}:desk"

    desk_group: str = "fanout"

    @property
    def desk_applied(self) -> str:
        """Id of the last desk entry applied to the tickers (the workers' shared cursor)."""
        return f"{self.tag}:desk:applied"

    def ticker(self, edition: str) -> str:
        """An edition's ticker stream: the order every reader sees; ids are cursors."""
        return f"{self.tag}:ticker:{edition}"

    def ticker_origin(self, edition: str) -> str:
        """Id of the first entry written to an edition's ticker (set with it, so it vanishes with
        the data): a log that no longer starts there was trimmed, and `since=0-0` cannot replay it."""
        return f"{self.tag}:ticker-origin:{edition}"

    def line(self, line_id: str) -> str:
        """A line's current state (JSON)."""
        return f"{self.tag}:line:{line_id}"

    def history(self, line_id: str) -> str:
        """Every version of a line (list of JSON documents, oldest first)."""
        return f"{self.tag}:history:{line_id}"

    @property
    def line_index(self) -> str:
        """Hash line id -> edition, written with the post so follow-up actions validate."""
        return f"{self.tag}:lines"

    @property
    def revisions(self) -> str:
        """Hash line id -> the revision its last accepted change produces (service/desk.py): what
        If-Match is compared with, atomically with appending the change to the desk."""
        return f"{self.tag}:revisions"

    def live(self, edition: str) -> str:
        """Sorted set of an edition's live line ids, scored by first publication (ms)."""
        return f"{self.tag}:live:{edition}"

    def scheduled(self, edition: str) -> str:
        """Sorted set of an edition's embargoed line ids, scored by release time (ms)."""
        return f"{self.tag}:scheduled:{edition}"

    def killed(self, edition: str) -> str:
        """Sorted set of an edition's retracted line ids (score: when), for feed tombstones."""
        return f"{self.tag}:killed:{edition}"

    @property
    def audit(self) -> str:
        """The audit stream: every applied editorial action with actor, before and after."""
        return f"{self.tag}:audit"

    def reach(self, line_id: str) -> str:
        """Hash of per-node delivery counts and times of a line's versions."""
        return f"{self.prefix}:reach:{line_id}"

    def readers(self, node: str) -> str:
        """Hash edition -> readers connected to one service node now (desks excluded), rewritten
        every second or so with a TTL of a few seconds: it vanishes when the node dies
        (service/reach.py, `OnlineReaders`)."""
        return f"{self.prefix}:readers:{node}"

    @property
    def readers_nodes(self) -> str:
        """Sorted set of the nodes that published reader counts, scored by when they last did (ms):
        where to look for `readers(node)` hashes. Members unseen for an hour are dropped."""
        return f"{self.prefix}:readers-nodes"

    @property
    def expiry(self) -> str:
        """Sorted set of line ids scored by their expiry time (ms)."""
        return f"{self.tag}:expiry"

    def idempotency(self, token_id: str, key: str) -> str:
        """Stored first response of a POST made with an Idempotency-Key."""
        return f"{self.tag}:idem:{token_id}:{key}"

    @property
    def rate_limits(self) -> str:
        """Prefix of the rate-limit counters (service/rate_limits.py), shared by every node.

        The `limits` library writes `<this>:{LIMITER/<limit>/<who>/<amount>/<multiples>/<unit>}`
        (the current window) and the same name plus `/-1` (the previous one); it adds the `{…}`
        hash tag itself so both land in one Cluster slot, which is why this prefix carries none
        (docs/operations.md, "Redis").
        """
        return f"{self.prefix}:rate"

    @property
    def tokens(self) -> str:
        """Hash token id -> token record (hashed secret, role, editions)."""
        return f"{self.prefix}:tokens"

    @property
    def epoch(self) -> str:
        """The tickers' generation id: created with the ticker data, so it vanishes with it.

        A node that finds it changed (or missing) knows the history it holds in memory is gone
        and sends reset snapshots; see docs/protocol.md, "Ticker epochs".
        """
        return f"{self.tag}:epoch"

    @property
    def workers(self) -> str:
        """Sorted set of worker names scored by their last heartbeat (ms): who is alive."""
        return f"{self.tag}:workers"

    @property
    def arq_queue(self) -> str:
        """The arq job queue used for scheduled work (expiry)."""
        return f"{self.prefix}:arq:queue"

    # -- pushes to closed apps (docs/push.md) ------------------------------------------------

    def push_registration(self, registration_id: str) -> str:
        """A push registration (JSON): the target, its filters, the hash of its secret."""
        return f"{self.push_tag}:reg:{registration_id}"

    def push_targets(self, edition: str, urgency: str) -> str:
        """Sorted set (all scores 0, walked by id with ZRANGEBYLEX) of the registrations of an
        edition whose minimum urgency is `urgency`: a flash line goes to the three sets of its
        edition, an urgent one to the urgent and routine sets, a routine one to the routine set."""
        return f"{self.push_tag}:targets:{edition}:{urgency}"

    def push_client(self, address: str) -> str:
        """Set of the registration ids made from one client address (its bound)."""
        return f"{self.push_tag}:client:{address}"

    def push_sent(self, line_id: str) -> str:
        """Hash registration id -> the version of a line last accepted for it by its push
        service: who gets the line's correction or withdrawal. Expires with the push TTL."""
        return f"{self.prefix}:push:sent:{line_id}"

    def push_done(self, delivery_id: str) -> str:
        """Hash registration id -> outcome of one fan-out (one ticker event): a batch run again
        after a crash or a retry skips the targets already settled."""
        return f"{self.prefix}:push:done:{delivery_id}"

    def push_reach(self, line_id: str) -> str:
        """Hash of a line's push counts per version and kind: `<version>:<kind>:<outcome>` ->
        count, and `<version>:<kind>:first_ms` / `last_ms` (when its fan-out started and ended)."""
        return f"{self.prefix}:push:reach:{line_id}"

    def push_latest(self, line_id: str) -> str:
        """The newest correction or withdrawal planned for a line (JSON: its delivery id and job
        arguments): what a batch that reached targets after it was planned sends them next."""
        return f"{self.prefix}:push:latest:{line_id}"

    def push_cap(self, registration_id: str, hour: int) -> str:
        """New-line alerts sent to one registration in one hour (since the epoch): its cap."""
        return f"{self.prefix}:push:cap:{registration_id}:{hour}"

    # The consumer group on the ticker streams that plans push fan-outs (workers/push/planner.py).
    push_group: str = "push"

    @property
    def push_queue(self) -> str:
        """The arq queue of push fan-out batches."""
        return f"{self.prefix}:arq:push"

    @property
    def push_running(self) -> str:
        """Hash arq job id -> worker name of the push batches running now: a batch whose worker
        died is made runnable again at once instead of after arq's in-progress timeout."""
        return f"{self.tag}:push:running"

    # -- partner webhooks (docs/webhooks.md; flashwire/core/webhook_store.py) --------------------

    webhook_group: str = "webhooks"

    @property
    def webhook_endpoints(self) -> str:
        """Hash endpoint id -> endpoint record (JSON: owner, URL, filters, secrets, status)."""
        return f"{self.tag}:wh:endpoints"

    def webhook_log(self, endpoint_id: str) -> str:
        """An endpoint's own ordered log of messages (stream): delivered in its order, one at a time."""
        return f"{self.tag}:wh:log:{endpoint_id}"

    def webhook_state(self, endpoint_id: str) -> str:
        """Hash: where an endpoint's delivery stands (the log entry in flight, its attempt, when
        it is due, the worker running it): the attempt record arq's own retries cannot keep."""
        return f"{self.tag}:wh:state:{endpoint_id}"

    def webhook_delivery(self, endpoint_id: str, entry_id: str) -> str:
        """One delivery of one log entry: its outcome and every attempt (JSON, expiring)."""
        return f"{self.tag}:wh:delivery:{endpoint_id}:{entry_id}"

    def webhook_dispatched(self, edition: str) -> str:
        """Id of the last ticker entry of an edition turned into webhook messages (the
        dispatchers' shared cursor, as `desk_applied` is the appliers')."""
        return f"{self.tag}:wh:dispatched:{edition}"

    @property
    def webhook_queue(self) -> str:
        """The arq job queue of webhook delivery attempts."""
        return f"{self.prefix}:arq:webhooks"
