"""Place N orders into the order service's database (its outbox relay publishes them).

python examples/place_orders.py 10
"""

from __future__ import annotations

import sqlite3
import sys
import uuid
from pathlib import Path

from connectors import add_event, init_outbox

DATABASE = Path(".choreo/orders.db")
DATABASE.parent.mkdir(parents=True, exist_ok=True)
init_outbox(f"sqlite:///{DATABASE}")
db = sqlite3.connect(DATABASE)
db.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, status TEXT NOT NULL)")

for n in range(int(sys.argv[1]) if len(sys.argv) > 1 else 10):
    order = {
        "orderId": f"order-{uuid.uuid4().hex[:8]}",
        "amount": 50.0 + n * 60,
        "items": 1 + n % 5,
    }
    with db:
        db.execute("INSERT INTO orders VALUES (?, 'placed')", (order["orderId"],))
        add_event(
            db,
            aggregatetype="orders",
            aggregateid=order["orderId"],
            type="order.placed",
            payload=order,
            headers={"correlationid": order["orderId"]},
        )
    print("placed", order["orderId"])
