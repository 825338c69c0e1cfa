"""Search: queries, filters, facets and ranking over the store."""
