"""What models exist (cards), how to get them (hub downloads, built-in tiny models)."""
