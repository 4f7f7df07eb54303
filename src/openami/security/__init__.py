"""Security: the operation log (hash-chained, checkpoints signed with Ed25519)."""
