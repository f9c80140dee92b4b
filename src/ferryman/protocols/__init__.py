"""Protocol adapters: decode a wire format, call the engine, encode the answer."""
