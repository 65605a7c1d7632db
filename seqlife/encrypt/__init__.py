"""Encrypt stage: Crypt4GH files, signed integrity manifests (pure; keys come from infra)."""
