"""06_grpo: reinforcement learning with verifiable rewards (TRL's GRPOTrainer) on top of 03's adapter."""
