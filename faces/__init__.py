"""Face preprocessing shared by serving and training: decode → detect → align."""
