"""SqueezerFaceNet face-verification service (serving path: no torch)."""
