"""DAO governance: contract clients, directive watcher, governance API routes."""
