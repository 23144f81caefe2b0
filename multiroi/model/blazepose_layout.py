"""The layout of a BlazePose feature (``multiroi.model.blazepose``), importable without it."""

NUM_LANDMARKS = 39
NUM_FEATURES = 288 * 4 + NUM_LANDMARKS * 5 + NUM_LANDMARKS * 3  # 1464: pooled maps, landmarks
