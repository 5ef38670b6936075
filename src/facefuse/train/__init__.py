"""Training: losses per task kind (masked for missing labels)."""
