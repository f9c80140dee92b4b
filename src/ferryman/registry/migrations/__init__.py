"""Alembic migrations of the registry schema (run by ``ferryman.registry.store.upgrade_to_head``)."""
