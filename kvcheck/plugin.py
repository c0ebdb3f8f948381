"""kvcheck's pytest plugin."""
