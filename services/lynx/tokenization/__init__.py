"""The decoder model's tokenizer and chat template, and incremental detokenisation: library code, not a service.

The tokenizer service serves them over HTTP; the decoder runs them in its own process to turn the ids it generates
into text deltas. Both import them from here, so neither service imports the other.
"""
