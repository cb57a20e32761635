"""Settings derived from others: the event relay's channel prefix."""

from omoi.config import Settings


def test_the_relay_channel_names_the_brokers_database_unless_set() -> None:
    def channel(**env: str) -> str:
        return Settings.from_env(env).relay_channel

    assert channel(OMOI_BROKER_URL="redis://h:6379/9") == "omoi.events.db9"
    assert channel(OMOI_BROKER_URL="redis://h:6379?db=3") == "omoi.events.db3"
    assert channel(OMOI_BROKER_URL="redis://h:6379") == "omoi.events.db0"
    assert channel(OMOI_BROKER_URL="redis://h/2", OMOI_EVENTS_CHANNEL="acme") == "acme"
