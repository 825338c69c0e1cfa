"""Vector stores: `store.base` declares what the core may ask (VectorStore, StoreBackend);
`store.backend.ChromaBackend` opens Chroma collections; the filter index and its change log
(filter_index, index_files, index_keeper) make filtered queries exact and fast."""
