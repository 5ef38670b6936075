"""Evaluation: metrics by name, breakdowns and reports."""
