"""ragloop's built-in plugins. Each module registers through the hooks, as a third party would."""
