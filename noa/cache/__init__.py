"""The response cache: policy and keys, the tiers (memory, Redis or the CacheActor, SQL), stream
replay, and single flight within and across replicas."""
