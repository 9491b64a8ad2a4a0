from datetime import date

from switchboard.demo_orders.app import find_order


def test_fixed_orders_and_deterministic_synthetic_ones() -> None:
    today = date(2026, 11, 21)
    assert find_order("a12345", today)["carrier"] == "DHL"  # type: ignore[index]
    first = find_order("55102", today)
    assert first is not None and first == find_order("55102", today)
    assert first["order_id"] == "55102"
    assert find_order("not an order", today) is None
    assert find_order("ZZZ", today) is None
