"""The gateway: Switchboard's gRPC front door."""
