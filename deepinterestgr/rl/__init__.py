"""RL stage: GRPO policy over the SID generator with pluggable rewards (exact, valid, prefix, rank, QARM)."""
