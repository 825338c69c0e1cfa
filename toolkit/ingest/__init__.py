"""Ingest: connector media in, decoded, tagged and embedded, records out to the store."""
