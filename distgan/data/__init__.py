"""Data sets as Parquet shards with one schema (see schema.py)."""
