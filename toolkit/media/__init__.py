"""Media decoding shared by ingest and search: images, video frames and their limits."""
