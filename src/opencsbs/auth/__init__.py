"""Authentication (who calls: local tokens or Keystone) and authorization (what they may do)."""
