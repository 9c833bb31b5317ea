"""Serving out: the SavedModel export for TF Serving, its signatures and warmup, and a client."""
