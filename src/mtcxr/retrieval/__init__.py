"""Retrieval: FAISS indexes, search, evaluation and the published retrieval protocols."""
