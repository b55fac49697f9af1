"""Where problems come from: read a source, prepare it (validate, filter,
dedup, decontaminate) into `prepared/problems.parquet`."""
