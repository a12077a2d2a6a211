"""flashwire.core.settings: defaults, and start-up failures that name the variable."""

from __future__ import annotations

import pytest

from flashwire.core.settings import Settings, SettingsError


def test_settings_defaults() -> None:
    """With no environment, settings are the documented defaults (127.0.0.1:8000, 280 chars, 16 KiB)."""
    settings = Settings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.editions == ("en", "ar", "es")
    assert settings.text_max_chars == 280
    assert settings.max_body_bytes == 16 * 1024
    custom = Settings.from_env(
        {
            "FLASHWIRE_EDITIONS": " en , fr ,",
            "REDIS_URL": "unix:///tmp/r.sock",
            "FLASHWIRE_HEARTBEAT_S": "2.5",
        }
    )
    assert custom.editions == ("en", "fr")
    assert custom.redis_url == "unix:///tmp/r.sock"
    assert custom.heartbeat_s == 2.5


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        pytest.param({"FLASHWIRE_PORT": "eighty"}, "FLASHWIRE_PORT", id="port-not-int"),
        pytest.param({"FLASHWIRE_PORT": "-1"}, "FLASHWIRE_PORT", id="port-negative"),
        pytest.param({"FLASHWIRE_TEXT_MAX_CHARS": "0"}, "FLASHWIRE_TEXT_MAX_CHARS", id="text-max-zero"),
        pytest.param({"FLASHWIRE_DEFAULT_TTL_S": "1h"}, "FLASHWIRE_DEFAULT_TTL_S", id="ttl-not-int"),
        pytest.param({"FLASHWIRE_HEARTBEAT_S": "fast"}, "FLASHWIRE_HEARTBEAT_S", id="heartbeat-not-number"),
        pytest.param({"FLASHWIRE_HEARTBEAT_S": "0"}, "FLASHWIRE_HEARTBEAT_S", id="heartbeat-zero"),
        pytest.param({"FLASHWIRE_OUTBOX_MAX_FRAMES": "0"}, "FLASHWIRE_OUTBOX_MAX_FRAMES", id="outbox-zero"),
        pytest.param({"FLASHWIRE_MAX_CONNECTIONS": "many"}, "FLASHWIRE_MAX_CONNECTIONS", id="max-conn"),
        pytest.param({"FLASHWIRE_TICKER_RETENTION": "5"}, "FLASHWIRE_TICKER_RETENTION", id="retention-small"),
        pytest.param({"FLASHWIRE_CLAIM_IDLE_MS": "10"}, "FLASHWIRE_CLAIM_IDLE_MS", id="claim-idle-small"),
        pytest.param({"FLASHWIRE_EDITIONS": "en,e n"}, "FLASHWIRE_EDITIONS", id="edition-space"),
        pytest.param({"FLASHWIRE_EDITIONS": "en,<ar>"}, "FLASHWIRE_EDITIONS", id="edition-markup"),
        pytest.param({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL", id="redis-url-scheme"),
    ],
)
def test_settings_errors_name_the_variable(env: dict[str, str], variable: str) -> None:
    """A malformed environment variable fails at start-up with a SettingsError naming it."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert variable in str(caught.value)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_settings_reject_non_finite_heartbeat(value: str) -> None:
    """FLASHWIRE_HEARTBEAT_S must be a finite positive number."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"FLASHWIRE_HEARTBEAT_S": value})
    assert "FLASHWIRE_HEARTBEAT_S" in str(caught.value)


def test_settings_reject_port_out_of_range() -> None:
    """FLASHWIRE_PORT above 65535 fails at start-up naming the variable."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"FLASHWIRE_PORT": "70000"})
    assert "FLASHWIRE_PORT" in str(caught.value)


def test_topic_configuration_must_be_slugs() -> None:
    """A section configured as 'Politics' fails at start-up naming the variable."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"FLASHWIRE_SECTIONS": "Politics,economy"})
    assert "FLASHWIRE_SECTIONS" in str(caught.value)


@pytest.mark.parametrize(
    "edition", ["ع", "ⅷ", "x²", "EN", "en_GB", "e", "en-", "toolongtag", "en-gb-x-y-z-w"]
)
def test_an_edition_code_must_be_a_lower_case_bcp47_tag(edition: str) -> None:
    """An edition is a Redis key part, a URL segment and a Content-Language header: ASCII BCP 47."""
    with pytest.raises(SettingsError, match="BCP 47"):
        Settings.from_env({"FLASHWIRE_EDITIONS": f"en,{edition}"})


def test_regional_editions_are_accepted() -> None:
    assert Settings.from_env({"FLASHWIRE_EDITIONS": "en,pt-br,zh-hant"}).editions == (
        "en",
        "pt-br",
        "zh-hant",
    )


def test_a_cluster_needs_arq_on_a_redis_of_its_own() -> None:
    """arq cannot run on a Redis Cluster (PITFALLS 3.15): FLASHWIRE_REDIS_CLUSTER without a separate
    FLASHWIRE_ARQ_REDIS_URL fails at start-up naming the variable; without a Cluster, arq's Redis
    defaults to REDIS_URL."""
    for env in (
        {"FLASHWIRE_REDIS_CLUSTER": "true"},
        {"FLASHWIRE_REDIS_CLUSTER": "true", "FLASHWIRE_ARQ_REDIS_URL": "redis://127.0.0.1:6379/0"},
    ):
        with pytest.raises(SettingsError, match="FLASHWIRE_ARQ_REDIS_URL"):
            Settings.from_env(env)
    with pytest.raises(SettingsError, match="FLASHWIRE_ARQ_REDIS_URL"):
        Settings.from_env({"FLASHWIRE_ARQ_REDIS_URL": "http://queue"})
    assert Settings.from_env({}).arq_url == "redis://127.0.0.1:6379/0"
    cluster = Settings.from_env(
        {
            "FLASHWIRE_REDIS_CLUSTER": "yes",
            "REDIS_URL": "redis://node1:7000",
            "FLASHWIRE_ARQ_REDIS_URL": "redis://q:6380",
        }
    )
    assert (cluster.redis_cluster, cluster.arq_url) == (True, "redis://q:6380")


def test_a_cluster_refuses_what_only_sentinel_and_replicas_can_do() -> None:
    """WAIT on a Cluster client goes to its default node, not the write's shard (PITFALLS 3.6), a
    Cluster fails over without sentinels, and replica reads are not built for it: each, with
    FLASHWIRE_REDIS_CLUSTER, stops the start naming the setting."""
    cluster = {
        "FLASHWIRE_REDIS_CLUSTER": "true",
        "REDIS_URL": "redis://node1:7000",
        "FLASHWIRE_ARQ_REDIS_URL": "redis://q:6380",
    }
    with pytest.raises(SettingsError, match="FLASHWIRE_WAIT_REPLICAS"):
        Settings.from_env({**cluster, "FLASHWIRE_WAIT_REPLICAS": "1"})
    sentinels = {"FLASHWIRE_REDIS_SENTINELS": "s1:26379", "FLASHWIRE_REDIS_SENTINEL_MASTER": "flashwire"}
    with pytest.raises(SettingsError, match="FLASHWIRE_REDIS_SENTINELS"):
        Settings.from_env({**cluster, **sentinels})
    replicas = {"FLASHWIRE_REDIS_READ_FROM_REPLICAS": "true", "FLASHWIRE_REDIS_REPLICA_URL": "redis://r:6379"}
    with pytest.raises(SettingsError, match="FLASHWIRE_REDIS_READ_FROM_REPLICAS"):
        Settings.from_env({**cluster, **replicas})
