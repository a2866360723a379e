"""Operations: the per-request record, Prometheus metrics and the log format."""
