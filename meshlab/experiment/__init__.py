"""Experiments: definitions (data), the seeded plan, trials, gates and the run store."""
