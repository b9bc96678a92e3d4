"""V2 over REST: routes, codec, status table."""
