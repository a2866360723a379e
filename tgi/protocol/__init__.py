"""TGI's wire protocol: the types of its JSON, its SSE framing, its errors mapped to ours, and one async client per endpoint."""
