"""Data in: sources, the input pipeline, the paper's preprocessing, statistics, bad-image guard.

Imports nothing of the package above `constants` (a test walks the imports).
"""
