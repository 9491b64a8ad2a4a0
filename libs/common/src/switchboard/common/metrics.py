"""Prometheus metrics of the shared Kafka layer: dead letters, retries and consumer lag."""

from prometheus_client import Counter, Gauge

DEAD_LETTERS = Counter(
    "switchboard_dead_letters",
    "Consumed records given up on after their bounded attempts, by source topic",
    ["topic", "group"],
)
RECORD_RETRIES = Counter(
    "switchboard_record_retries", "Failed attempts at a consumed record", ["topic", "group"]
)
CONSUMER_LAG = Gauge(
    "switchboard_kafka_consumer_lag",
    "Records not yet committed by a consumer group, summed over the topic's partitions",
    ["group", "topic"],
)
