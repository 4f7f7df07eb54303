"""FastAPI application: one router per context, shared dependencies in deps.py."""
