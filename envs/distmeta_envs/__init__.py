"""Gymnasium environments with task parameters for meta-RL (filled by the meta-RL work)."""
