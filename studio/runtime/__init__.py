"""Turning cards into loaded pipelines (loader) and deciding what stays in memory (memory)."""
