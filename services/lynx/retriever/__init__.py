"""The retriever service: embed the query, return the nearest passages of the indexed corpus."""
