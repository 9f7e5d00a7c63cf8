"""Runs that outlive a call: surface files, resumable checkpoints, sharded runs."""
