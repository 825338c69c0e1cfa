"""Vector stores. Each backend implements `store.base.VectorStore`."""
