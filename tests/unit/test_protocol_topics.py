"""The MQTT topic builder and parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import Channel, TopicError, parse_topic, subscription_for, topic_for

ids = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)


@given(kitchen=ids, device=ids, channel=st.sampled_from(list(Channel)))
def test_parse_inverts_build(kitchen: str, device: str, channel: Channel) -> None:
    """Parsing a built topic gives back its parts."""
    parts = parse_topic(topic_for(kitchen, device, channel))
    assert (parts.kitchen_id, parts.device_id, parts.channel) == (kitchen, device, channel)


@pytest.mark.parametrize(
    "topic",
    [
        "brigade/v1/k1/oven-1",
        "brigade/v1/k1/oven-1/cmd/extra",
        "other/v1/k1/oven-1/cmd",
        "brigade/v2/k1/oven-1/cmd",
        "brigade/v1/k1/oven-1/reboot",
        "brigade/v1/k 1/oven-1/cmd",
        "brigade/v1/k1/+/cmd",
        "brigade/v1//oven-1/cmd",
    ],
)
def test_foreign_topics_are_refused(topic: str) -> None:
    """Topics outside the brigade/v1 tree, wildcards and unknown channels raise TopicError."""
    with pytest.raises(TopicError):
        parse_topic(topic)


@pytest.mark.parametrize("bad", ["a/b", "+", "#", "", "x" * 65, "ofen-ü"])
def test_ids_that_would_break_the_tree_are_refused(bad: str) -> None:
    """An id cannot smuggle a separator or wildcard into a topic."""
    with pytest.raises(TopicError):
        topic_for(bad, "oven-1", Channel.CMD)


def test_subscriptions_cover_a_kitchen_or_one_channel() -> None:
    """Subscription filters use single-level wildcards only."""
    assert subscription_for("k1") == "brigade/v1/k1/+/+"
    assert subscription_for("k1", Channel.ACK) == "brigade/v1/k1/+/ack"
    assert subscription_for("k1", Channel.CMD, "oven-1") == "brigade/v1/k1/oven-1/cmd"
