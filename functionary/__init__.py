"""Functionary prompt formats, OpenAI types and parsers. Pure: no network, no Docker."""
