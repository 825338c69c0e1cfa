"""Recommendations from what shoppers do: an events store, bought-together rules, trending, picks for a user.

Nothing here loads until used: `Toolkit(...).recommend` builds a `Recommender` (service.py) on first access.
"""
