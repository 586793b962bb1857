"""GRPO for unified models: rollouts (RT2I, SRR), advantages, losses, LoRA, the jitted learner step."""
