"""Output store: Parquet shards, the manifest that makes resume exact."""
