"""ragloop's core: hook specifications, plugin manager, registries, base classes, workspace."""

from ragloop.core.quiet import no_call_home

__version__ = "0.1.0"

no_call_home()      # before any library that could call home is imported
