"""The wire formats: OpenAI request models and validation, response builders and normalisers,
SSE framing, the Anthropic translation, and the vocabulary of operations."""
