"""Training the offline model's heads from labelled photos (beside core, not inside it)."""
