"""TGI on this host: model weights from the Hub, the TGI container through the Docker SDK, the emulator test image."""
