"""The node daemon: config, CLI, store, scheduler, HTTP API."""
