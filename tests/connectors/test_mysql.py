"""MariaDB/MySQL specifics: resume by GTID, the stored position, clear binlog settings errors."""

from __future__ import annotations

from typing import Any

import pytest

from broker import Bus
from connectors import CDCSettingsError
from connectors.db import check_mysql_settings
from connectors.dburl import DatabaseURL
from connectors.relay import Relay
from connectors.relay_mysql import MySQLSource
from connectors.routing import Router
from connectors.runtime import outbox_status
from tests.connectors.conftest import OutboxDB
from tests.connectors.relaying import RelayRun, collecting, memory_broker, order_rows

TOPIC = "outbox.event.order"


@pytest.mark.mysql
async def test_resume_by_gtid_publishes_only_the_new_transactions(mysql_outbox: OutboxDB) -> None:
    """A relay restarted with resume='gtid' continues after the last confirmed MariaDB GTID."""
    broker = memory_broker()
    first = mysql_outbox.write(order_rows(3))
    async with collecting(broker, TOPIC) as got:
        for resume in ("position", "gtid"):
            source = MySQLSource(mysql_outbox.url, table=mysql_outbox.table, resume=resume)  # type: ignore[arg-type]
            run = RelayRun(Relay(source, Bus(broker), Router(), idle_timeout=0.2))
            wanted = 3 if resume == "position" else 6
            await run.until(lambda n=wanted: len(got[TOPIC].events) >= n, what=f"{wanted} events")
            run.relay.stop()
            await run.task
            if resume == "position":
                assert "0-" in source.position["gtid"]
                second = mysql_outbox.write(order_rows(3, start=3))
    assert first + second == got[TOPIC].ids


@pytest.mark.mysql
def test_status_shows_stored_position_and_pending_events(mysql_outbox: OutboxDB) -> None:
    """`status` reports the stored binlog position, the server's, and rows not yet relayed."""
    mysql_outbox.write(order_rows(4))
    info = outbox_status(mysql_outbox.url, table=mysql_outbox.table)
    assert (4, False) == (info["lag_events"], info["running"])
    assert {"file", "pos", "gtid"} == set(info["position"])
    assert info["server_position"]["pos"] > 0


class _Settings:
    """A cursor answering the settings query the way a misconfigured server does."""

    def __init__(self, row: tuple[Any, ...]) -> None:
        self.row = row

    def execute(self, query: str) -> None:
        assert "@@binlog_format" in query

    def fetchone(self) -> tuple[Any, ...]:
        return self.row


def test_wrong_binlog_settings_name_the_my_cnf_lines() -> None:
    """Each wrong setting is reported with the line to put in my.cnf."""
    db = DatabaseURL.parse("mysql://root:secret@db:3306/app")
    with pytest.raises(CDCSettingsError) as caught:
        check_mysql_settings(_Settings((0, "MIXED", "MINIMAL", 0)), db)
    message = str(caught.value)
    assert "log_bin=OFF, binlog_format=MIXED, binlog_row_image=MINIMAL, server_id=0" in message
    assert "[mysqld] log_bin = mysql-bin; binlog_format = ROW; binlog_row_image = FULL; " in message
    assert "server_id = 1 in my.cnf" in message
    assert "secret" not in message
