"""The networks: ImageNet backbones with a head, freezing, the frozen-prefix cache, training, checkpoints."""
