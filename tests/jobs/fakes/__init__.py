"""Local stand-ins for the services the identities and CometBFT jobs talk to (see each module)."""
