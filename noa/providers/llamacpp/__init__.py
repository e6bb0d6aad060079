"""Local GGUF models: the provider, the worker process that runs llama.cpp, the model catalog
and the LRU of loaded models."""
