"""The policy file: a good one loads, a bad one fails at start-up naming the bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from consentry.core.errors import PolicyError
from consentry.core.policy import hash_token, load_policy, parse_policy
from tests.support import EXAMPLE_POLICY


def _example() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(EXAMPLE_POLICY.read_text())
    return loaded


def test_the_example_policy_loads_and_resolves_demo_tokens() -> None:
    policy = load_policy(EXAMPLE_POLICY)
    assert policy.producer_for_token("demo-shop-token") == "shop"
    assert policy.actor_for_token("demo-support-token") == "alice-support"
    assert policy.actor_for_token("not-a-token") is None
    assert policy.roles_may(("support_agent",), "support", "read") == "support_agent"
    assert policy.roles_may(("support_agent",), "marketing", "read") is None


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("purposes", "marketing", "retention_days"), -3, "purposes.marketing.retention_days"),
        (("purposes", "marketing", "lawful_basis"), "vibes", "purposes.marketing.lawful_basis"),
        (("purposes", "marketing", "colour"), "blue", "purposes.marketing.colour"),
        (("roles", "marketer", "purposes"), ["astrology"], "roles.marketer.purposes"),
        (("actors", "alice-support", "token_sha256"), "plain", "actors.alice-support.token_sha256"),
        (("producers", "shop", "namespaces"), [], "producers.shop.namespaces"),
    ],
)
def test_a_bad_policy_fails_with_a_message_naming_the_bad_key(
    path: tuple[str, ...], value: object, named: str
) -> None:
    raw = _example()
    target = raw
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(PolicyError, match=named.replace(".", r"\.")):
        parse_policy(raw)


def test_an_unreadable_or_non_yaml_policy_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot be read"):
        load_policy(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("purposes: [unclosed")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(broken)


def test_tokens_are_only_ever_stored_as_sha256_hashes() -> None:
    text = EXAMPLE_POLICY.read_text()
    assert hash_token("demo-shop-token") in text
    assert "token_sha256: demo" not in text
