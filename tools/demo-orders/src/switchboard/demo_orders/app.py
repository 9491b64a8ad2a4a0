"""A small HTTP service answering order look-ups for the local demo tenant.

`GET /orders/{order_id}` returns the order as JSON (404 when unknown); `GET /_health`
answers once the server listens. Orders are a few fixed examples plus a deterministic
synthetic order for any other plausible order number, so demos never hit an empty shop.
"""

import hashlib
import logging
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchboard.common.lifecycle import wait_for_stop_signal

log = logging.getLogger(__name__)

ORDER_ID = re.compile(r"^(?:[A-Za-z]{0,3}-?)?\d{4,12}$")
STATUSES = ("processing", "shipped", "in transit", "out for delivery", "delivered")
CARRIERS = ("DHL", "UPS", "DPD", "GLS", "PostNL")

FIXED_ORDERS: dict[str, dict[str, Any]] = {
    "A12345": {
        "order_id": "A12345",
        "status": "shipped",
        "carrier": "DHL",
        "tracking_code": "JD014600006281234567",
        "expected_delivery": "2026-11-24",
        "items": [{"name": "Wireless headphones", "quantity": 1}],
    },
    "B77120": {
        "order_id": "B77120",
        "status": "delivered",
        "carrier": "UPS",
        "tracking_code": "1Z999AA10123456784",
        "delivered_on": "2026-11-18",
        "items": [{"name": "Coffee machine", "quantity": 1}],
    },
}


class DemoOrdersSettings(BaseSettings):
    """`SWITCHBOARD_DEMO_ORDERS_*`"""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_DEMO_ORDERS_")

    host: str = "127.0.0.1"
    port: int = Field(default=8086, ge=0, le=65535)


def find_order(order_id: str, today: date) -> dict[str, Any] | None:
    """The order, or None when the id is not a plausible order number."""
    fixed = FIXED_ORDERS.get(order_id.upper())
    if fixed is not None:
        return fixed
    if not ORDER_ID.match(order_id):
        return None
    digest = hashlib.sha256(order_id.upper().encode()).digest()
    status = STATUSES[digest[0] % len(STATUSES)]
    order: dict[str, Any] = {
        "order_id": order_id.upper(),
        "status": status,
        "carrier": CARRIERS[digest[1] % len(CARRIERS)],
        "items": [{"name": "Demo item", "quantity": 1 + digest[2] % 3}],
    }
    if status == "delivered":
        order["delivered_on"] = (today - timedelta(days=1 + digest[3] % 5)).isoformat()
    else:
        order["expected_delivery"] = (today + timedelta(days=1 + digest[3] % 5)).isoformat()
    return order


async def _order(request: web.Request) -> web.Response:
    order_id = request.match_info["order_id"]
    order = find_order(order_id, datetime.now(UTC).date())
    if order is None:
        return web.json_response(
            {"error": f"no order {order_id!r}", "order_id": order_id}, status=404
        )
    return web.json_response(order)


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app() -> web.Application:
    """The aiohttp application (also used in-process by tests)."""
    app = web.Application()
    app.router.add_get("/orders/{order_id}", _order)
    app.router.add_get("/_health", _health)
    return app


async def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = DemoOrdersSettings()
    runner = web.AppRunner(create_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info("demo orders listening on http://%s:%d", settings.host, settings.port)
    await wait_for_stop_signal()
    await runner.cleanup()
