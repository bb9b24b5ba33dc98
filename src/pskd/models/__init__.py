"""Encoders, heads, teachers and students. Every network returns (embedding, logits)."""
