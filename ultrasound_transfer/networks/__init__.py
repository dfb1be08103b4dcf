"""The networks: backbones with a head and freezing, the frozen-prefix cache, runtime, training paths,
fitting, checkpoints."""
