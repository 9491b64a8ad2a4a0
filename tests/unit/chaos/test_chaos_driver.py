"""The chaos driver's verdict and table (the rounds themselves run in `make chaos`)."""

from tests.e2e.chaos import FAULTS, table, verdict
from tests.e2e.faults_support import FaultReport


def test_a_round_with_a_lost_duplicated_or_mismatched_turn_fails_the_run() -> None:
    clean = FaultReport("kafka-kill", requests=5, accepted=5, completed=4, clear_errors=1)
    assert verdict([(1, clean)])
    for field in ("lost", "duplicated", "mismatched"):
        bad = FaultReport("worker-kill", requests=5, accepted=5, completed=4)
        setattr(bad, field, 1)
        assert not verdict([(1, clean), (2, bad)]), field


def test_the_table_has_a_row_per_round_and_every_fault_is_cycled() -> None:
    rows = [(1, FaultReport("kafka-kill", accepted=3, completed=3))]
    assert table(rows).splitlines()[-1] == "| 1 | kafka-kill | 3 | 3 | 0 | 0 | 0 | 0 |"
    assert set(FAULTS) == {
        "kafka-kill",
        "worker-kill",
        "orchestrator-kill",
        "rebalance",
        "ferretdb-20s",
    }
