"""One module per CLI command; each exposes ``command`` (a Typer-annotated function)."""
