"""Training: the trainer, its callbacks, the paper's optimizer, strategies and evaluation.

Imports the model, data, config and run directory, never serving or pictures (a test checks).
"""
