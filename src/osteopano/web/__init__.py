"""The web page and REST API."""
