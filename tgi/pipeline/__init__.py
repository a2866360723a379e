"""The chat pipeline: a checked request -> prompt and TGI parameters -> TGI events -> stops -> parser -> OpenAI chunks."""
