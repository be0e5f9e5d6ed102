"""ragloop's core: hook specifications, plugin manager, registries, base classes, workspace."""

__version__ = "0.1.0"
