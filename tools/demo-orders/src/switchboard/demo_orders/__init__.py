"""The demo order service behind the demo tenant's `order_status` HTTP tool."""
