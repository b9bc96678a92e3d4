"""Load generation and measurement of any serving environment."""
