"""Data: dataset readers, ingestion into the core tables, the pixel cache, image decoding, split loading."""
