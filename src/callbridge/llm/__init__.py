"""L2 llm adapters behind a small protocol."""
