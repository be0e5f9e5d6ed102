"""ragloop's built-in vector stores, registered through the `register_stores` hook."""
