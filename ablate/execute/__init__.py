"""Deciding how a study runs on this machine before it runs: launch checks, the GPU plan, fusing, the estimate.
"""
