"""What every Switchboard service needs: settings, Kafka envelopes, telemetry, health."""
