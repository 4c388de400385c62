"""A delivery whose outcome cannot be recorded (the database fails) is logged with a safe
message: never the driver's text, which carries the SQL and its parameters."""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from tests.support.receiver import Receiver
from xshathra.storage.database import open_database
from xshathra.tenancy.apps import generate_app
from xshathra.webhooks.dispatcher import WebhookDispatcher
from xshathra.webhooks.models import NewDelivery, Webhook, new_webhook_id


async def test_a_failing_outcome_write_logs_no_driver_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_file = tmp_path / "errors.db"
    db = await open_database(f"sqlite:///{db_file}")
    dispatcher = WebhookDispatcher(db, "node-1", allow_private=True, timeout=2.0)
    caplog.set_level(logging.WARNING)  # what a production log shows
    try:
        await db.apps.create_app(generate_app(name="e", app_id="errs")[0])
        with Receiver().running() as rx:
            hook = Webhook(
                id=new_webhook_id(), app_id="errs", url=rx.url, secret="whsec-x", events=("*",)
            )
            await db.webhooks.create_webhook(hook)
            await db.deliveries.enqueue(
                [NewDelivery("dlv_sensitive_param", hook.id, "errs", "evt_1", "e", "r", "{}")]
            )
            with sqlite3.connect(db_file) as conn:
                conn.execute(
                    "CREATE TRIGGER no_outcome BEFORE UPDATE OF status ON webhook_deliveries "
                    "WHEN NEW.status = 'delivered' BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
                )
            await dispatcher.start()
            await asyncio.to_thread(rx.wait_for, 1)
            deadline = time.monotonic() + 5
            while dispatcher.in_flight:  # the attempt's task has ended
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            gc.collect()  # an unretrieved task error is logged when the task is collected
    finally:
        await dispatcher.close()
        await db.close()
    text = caplog.text
    assert "webhook delivery dlv_sensitive_param not recorded: IntegrityError" in text
    assert "[parameters:" not in text and "[SQL:" not in text and "disk on fire" not in text
