"""The distributed runtime on NATS: connection, subjects, transport, worker, store, control service."""
