"""Read models: what the API, the board and /metrics show, read without changing anything."""
