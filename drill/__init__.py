"""The chaos drill (docs/drill.md): a fault-injecting loopback server, a fleet of agents on Rebound and a fleet on
naive retries against identical faults, and a report of which recovered better. A face above healing, recovery
and core; nothing imports it."""
