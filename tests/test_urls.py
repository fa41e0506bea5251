"""Broker URLs pick the backend, mask passwords, and fail with a useful line."""

from __future__ import annotations

import pytest

from broker import ConfigurationError, UnknownBackendError, adapter_from_url, mask_url
from broker.adapters.memory import MemoryAdapter
from broker.adapters.sqlite import SQLiteAdapter
from broker.urls import resolve_url


def test_mask_url_hides_the_password() -> None:
    """Passwords never appear in messages."""
    assert "amqp://guest:***@h:5672/v" == mask_url("amqp://guest:secret@h:5672/v")
    assert "nats://h:4222" == mask_url("nats://h:4222")
    assert "kafka://h:9092?sasl_plain_username=u&sasl_plain_password=***&acks=all" == mask_url(
        "kafka://h:9092?sasl_plain_username=u&sasl_plain_password=hunter2&acks=all"
    )
    assert "nats://h:4222?token=***" == mask_url("nats://h:4222?token=abc")


def test_schemes_build_their_adapters(tmp_path: object) -> None:
    """memory:// and sqlite:/// build the embedded adapters, with query options applied."""
    assert isinstance(adapter_from_url("memory://x"), MemoryAdapter)
    adapter = adapter_from_url(f"sqlite:///{tmp_path}/b.db?partitions=3&visibility_timeout=9")
    assert isinstance(adapter, SQLiteAdapter)
    assert (3, 9.0) == (adapter.partitions, adapter.visibility_timeout)


def test_unknown_scheme_suggests_the_closest() -> None:
    """A typo in the scheme gets a did-you-mean and the list of known schemes."""
    with pytest.raises(UnknownBackendError, match=r"did you mean nats://\?"):
        adapter_from_url("nast://127.0.0.1:4222")


def test_no_scheme_is_explained() -> None:
    """A bare host:port is refused with the known schemes listed."""
    with pytest.raises(UnknownBackendError, match="has no scheme"):
        adapter_from_url("127.0.0.1:9092")


def test_bad_option_values_are_named() -> None:
    """An invalid option value names the option."""
    with pytest.raises(ConfigurationError, match="partitions"):
        adapter_from_url("sqlite:///x.db?partitions=zero")


def test_unknown_option_is_a_configuration_error() -> None:
    """An option the adapter does not know is refused, naming the URL."""
    with pytest.raises(ConfigurationError, match=r"sqlite:///x\.db"):
        adapter_from_url("sqlite:///x.db?colour=blue")


def test_resolve_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit URL wins over CHOREO_BROKER_URL, which wins over the embedded default."""
    monkeypatch.delenv("CHOREO_BROKER_URL", raising=False)
    assert "sqlite:///.choreo/broker.db" == resolve_url(None)
    monkeypatch.setenv("CHOREO_BROKER_URL", "memory://env")
    assert "memory://env" == resolve_url(None)
    assert "memory://flag" == resolve_url("memory://flag")
