"""Serving the exported file: an OpenAI-compatible chat server whose replies carry the reasoning apart from the
answer (`python -m lib serve`)."""
