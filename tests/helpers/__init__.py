"""Helpers shared by the tests: tiny models and data, known-answer runs, checks."""
