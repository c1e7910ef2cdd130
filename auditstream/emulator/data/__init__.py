"""Seeded, realistic StrongDM audit data built with the SDK's own protobuf classes."""
