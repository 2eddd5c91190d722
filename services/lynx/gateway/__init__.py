"""The gateway: OpenAI-compatible API, tenants, and the request orchestrator."""
