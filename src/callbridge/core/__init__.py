"""L0 vocabulary: frames, clock, events, errors and ports. Imports nothing of callbridge."""
