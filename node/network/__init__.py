"""Research as a network: following peers' logs and importing their verified results."""
