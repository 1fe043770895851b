"""RL stage: GRPO policy over the SID generator with pluggable rewards (exact, valid, prefix, rank, QARM).

- `deepinterestgr.rl.rewards`: the reward plugins and `CompositeReward` (the paper's reward is one config).
- `deepinterestgr.rl.grpo`: group advantages, the clipped surrogate and the k3 KL penalty.
- `deepinterestgr.rl.module.PolicyModule`: the LightningModule (`dig fit -c configs/model/policy_qarm.yaml ...`).
"""
