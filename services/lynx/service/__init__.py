"""The kernel every lynx service runs on: the app factory, shutdown and drain, errors, streaming lines, workers, fault
injection, the settings base, and the small shared pieces (files written whole, watched files, polling). Nothing here
imports a service, the tools or the local run."""
