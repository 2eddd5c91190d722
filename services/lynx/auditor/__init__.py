"""The trace auditor: counts spans whose parent never reached the trace store."""
