"""The Gradio web UI: one module per tab, shared widgets in common, the app in app."""
