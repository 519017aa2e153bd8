"""Results: typed Arrow rows, the exactly-once Parquet store and the end-of-run summary."""
