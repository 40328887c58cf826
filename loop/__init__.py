"""The research loop: propose, screen, train, evaluate, learn. Knows nothing of chains."""
