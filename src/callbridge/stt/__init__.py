"""L2 stt adapters behind a small protocol."""
