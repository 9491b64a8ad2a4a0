from aiokafka import TopicPartition

from switchboard.common.lag import lag_by_topic


def test_lag_sums_partitions_per_topic_and_counts_uncommitted_from_zero() -> None:
    a0, a1, b0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
    committed = {a0: 10, a1: -1}  # -1: the group has no committed offset there
    ends = {a0: 15, a1: 4, b0: 7}
    assert lag_by_topic(committed, ends) == {"a": 5 + 4, "b": 7}


def test_a_group_ahead_of_a_truncated_partition_has_no_negative_lag() -> None:
    tp = TopicPartition("a", 0)
    assert lag_by_topic({tp: 20}, {tp: 15}) == {"a": 0}
