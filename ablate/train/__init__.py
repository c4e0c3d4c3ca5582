"""One trial: the training loop (single or fused), how its steps execute (precision, compile), augmentation,
learning-rate schedule, telemetry, and the files a trial leaves behind.
"""
