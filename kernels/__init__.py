"""Token-mixer operators: a plain-torch reference for each, fast paths on GPU."""
