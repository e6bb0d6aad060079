"""Where answers come from: the ``Provider`` interface; OpenAI, Anthropic and a handle to a remote
one; ``transport/`` (how cloud requests travel); ``llamacpp/`` (local GGUF models)."""
