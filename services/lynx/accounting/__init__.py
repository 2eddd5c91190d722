"""Money: what a request's stages cost (pricing), how they are timed (clock), where they are charged (ledger)."""
