"""Training data: source extraction, face-crop cache preparation and reading."""
