"""The engine: one inference handler, routing, validation, loaded versions."""
