"""The faces users see: the CLI, the HTTP API and the page."""
