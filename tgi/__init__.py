"""All I/O with TGI, Docker and the Hub."""
