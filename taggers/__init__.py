"""Taggers and embedders. Each backend implements a protocol from `taggers.base`."""
