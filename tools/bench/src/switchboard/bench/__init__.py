"""`make bench`: the platform's own cost, measured against calling the simulator directly."""
