"""L2 tts adapters behind a small protocol."""
