"""Inference: trained checkpoints used on face crops."""
