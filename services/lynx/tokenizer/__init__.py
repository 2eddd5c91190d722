"""The tokenizer service: encode, count, chat template, incremental decode (over lynx.tokenization)."""
