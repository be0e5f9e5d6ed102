"""`ragloop serve`: an HTTP API over a warm workspace (core/serve/app.py), whose feedback lands
in the same rating tables as `ragloop rate` (core/serve/feedback.py). Importing this package
imports nothing heavy; FastAPI is imported by core/serve/app.py only when a server starts."""
