"""X-TRA: the retrieval memory, nearest-neighbour search, the retrieval-augmented classifier, its training and evaluation."""
