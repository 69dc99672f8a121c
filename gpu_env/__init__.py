"""Batched click environment: datasets, episode state, oracle, metrics, rewards, TorchRL env."""
