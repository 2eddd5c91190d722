"""What crosses a process boundary between lynx's services: one typed model per payload.

Each module is imported by both sides of its hop (the service that answers and the gateway
that asks), so a field renamed on one side fails the type checks and tests of the other.
"""
