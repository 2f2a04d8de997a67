"""BentoML service for the models this library trains (arrives with the serving issue)."""
