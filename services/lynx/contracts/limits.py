"""The limits on what a request may carry, defined once: every service's contract and the gateway's own validation
read them here, so the gateway never lets through what a service behind it refuses.

A client meets these at the gateway, as a 400 that names the limit (README "Errors").
"""

from __future__ import annotations

# A client's prompt, in characters: a completion's prompt, or all of a chat's message contents together. The tokenizer
# accepts this much text in one call; a prompt this long is far past any context, but it is refused only once counted
# in tokens, with the count.
MAX_PROMPT_CHARACTERS = 400_000
MAX_MESSAGES = 256
MAX_STOP_SEQUENCES = 4
# The most any decoder's context may hold (prompt + completion tokens per slot); a decoder is configured with at most
# this much (LYNX_DECODER_MAX_CONTEXT), and the gateway refuses a prompt past the context of the decoder it uses.
MAX_CONTEXT_TOKENS = 8192
# The retriever's query, in characters. The embedder reads only its first 256 tokens, so the gateway sends the first
# MAX_QUERY_CHARACTERS of a longer question: what it retrieves is the same.
MAX_QUERY_CHARACTERS = 20_000
MAX_DEADLINE_SECONDS = 3600.0
MAX_TEMPERATURE = 2.0
# A tenant's id: it travels in every service's payloads and labels the tenant's metrics.
MAX_TENANT_ID_CHARACTERS = 128


def tenant_id_error(tenant_id: str) -> str | None:
    """Why ``tenant_id`` cannot name a tenant, or None."""
    if 1 <= len(tenant_id) <= MAX_TENANT_ID_CHARACTERS and tenant_id.isprintable() and tenant_id.strip() == tenant_id:
        return None
    return (f"a tenant id has 1 to {MAX_TENANT_ID_CHARACTERS} printable characters without leading or trailing "
            f"spaces, not {tenant_id!r}")


def prompt_characters_error(characters: int) -> str | None:
    """Why a prompt of ``characters`` characters is refused before it is tokenized, or None."""
    if characters <= MAX_PROMPT_CHARACTERS:
        return None
    return (f"the prompt has {characters} characters; at most {MAX_PROMPT_CHARACTERS} are accepted (and far fewer fit "
            "the context): shorten it")


def context_error(prompt_tokens: int, max_tokens: int, context_tokens: int) -> str | None:
    """Why a prompt of ``prompt_tokens`` that may grow by ``max_tokens`` does not fit a context, or None."""
    needed = prompt_tokens + max_tokens
    if needed <= context_tokens:
        return None
    return (f"The prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}: {needed} exceeds the context of "
            f"{context_tokens} tokens. Shorten the prompt or lower max_tokens.")
