"""PPO learner over the batched click environment (TorchRL / tensordict parts)."""
