"""One module per command group: parse, call the library, print."""
